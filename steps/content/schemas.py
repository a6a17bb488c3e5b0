"""What the content API takes and returns, and the events of the moderation flow."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

MAX_TEXT_CHARS = 5000

# Control characters other than tab, line feed and carriage return (NUL included: Postgres text
# cannot hold it). A post may span several lines.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise PydanticCustomError(
            "text_control_characters",
            "must not contain control characters (line breaks and tabs are allowed)",
        )
    return value


ContentText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS),
    AfterValidator(_no_control_characters),
]
"""Text of 1 to 5,000 characters once trimmed (blank text is too short), several lines allowed."""


class SubmitContent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: ContentText


class ContentAccepted(BaseModel):
    id: uuid.UUID
    status: Literal["pending"]


class ContentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    text: str
    status: Literal["pending", "approved", "flagged"]
    reason: str | None = Field(description="why it was flagged: profanity or negative_sentiment")
    sentiment_score: float | None = Field(description="VADER compound score, -1 to 1")
    created_at: datetime
    moderated_at: datetime | None


# -- events ---------------------------------------------------------------------------------------


class ContentSubmitted(BaseModel):
    """`content.submitted`, emitted by SubmitContent once the row is stored."""

    id: uuid.UUID
    text: str = Field(max_length=MAX_TEXT_CHARS)
    author: str


class ContentFlagged(BaseModel):
    """`content.flagged`: the moderator's reason and the text's sentiment score."""

    id: uuid.UUID
    reason: Literal["profanity", "negative_sentiment"]
    score: float


class ContentApproved(BaseModel):
    """`content.approved`."""

    id: uuid.UUID
    score: float
