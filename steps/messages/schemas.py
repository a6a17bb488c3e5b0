"""What the messages API takes and returns, and the events of the messages flow."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

MAX_TEXT_CHARS = 2000
DEFAULT_ROOM = "general"
Sentiment = Literal["positive", "negative", "neutral"]

_ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Control characters other than tab, line feed and carriage return (NUL included: Postgres text
# cannot hold it). A message may span several lines; a name may not (see app.fields.SingleLine).
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _room(value: str) -> str:
    if not _ROOM.fullmatch(value):
        raise PydanticCustomError(
            "room_invalid", "must be 1 to 64 letters, digits, '-' or '_' (such as 'general')"
        )
    return value


def _message_text(value: str) -> str:
    if _TEXT_CONTROL.search(value):
        raise PydanticCustomError(
            "text_control_characters", "must not contain control characters (line breaks are fine)"
        )
    if not value.strip():
        raise PydanticCustomError("text_blank", "must not be blank")
    return value


Room = Annotated[
    str,
    AfterValidator(_room),
    Field(
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64},
        examples=[DEFAULT_ROOM],
    ),
]
"""A room name: 1 to 64 letters, digits, `-` or `_` (it is the `chat` stream's group id)."""

MessageText = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_message_text)
]
"""A message: 1 to 2,000 characters, not blank, line breaks allowed."""


# -- the API ---------------------------------------------------------------------------------------


class SendMessageIn(BaseModel):
    """A message for a room (`general` unless said otherwise)."""

    model_config = ConfigDict(extra="forbid")

    text: MessageText
    room: Room = DEFAULT_ROOM


class MessageAccepted(BaseModel):
    """The message is stored in the queue; its sentiment follows on GET /messages/{id}."""

    id: uuid.UUID
    status: Literal["sent"] = "sent"


class ListMessagesQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000)
    room: Room | None = Field(None, description="only the messages of this room")


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    room: str
    author: str
    text: str
    created_at: datetime
    sentiment: Sentiment | None = Field(None, description="null until the message is analysed")
    sentiment_score: float | None = Field(None, description="VADER's compound score, -1 to 1")
    analyzed_at: datetime | None = None


class MessagePage(BaseModel):
    items: list[MessageOut]
    total: int
    limit: int
    offset: int


# -- the events ------------------------------------------------------------------------------------


class MessageSent(BaseModel):
    """`message.sent`: everything needed to store the message, whichever subscriber runs first."""

    id: uuid.UUID
    room: Room
    author: str = Field(min_length=1, max_length=64)
    text: MessageText
    created_at: AwareDatetime


class MessageAnalyzed(BaseModel):
    """`message.analyzed`: the sentiment of a stored message."""

    id: uuid.UUID
    room: Room
    label: Sentiment
    score: float = Field(ge=-1.0, le=1.0)
