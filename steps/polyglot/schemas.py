"""Events of the polyglot flow, as the Python step reads them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MessageSent(BaseModel):
    """`polyglot.message.sent`, emitted by the TypeScript step `PolyglotSendMessage`."""

    id: str
    text: str = Field(min_length=1, max_length=2000)
    room: str
