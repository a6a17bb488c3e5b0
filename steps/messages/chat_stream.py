"""The `chat` stream: every message of a room, live, with its sentiment once analysed.

`group_id` is the room; an item's id is the message id. The messages feature writes here:
`SendMessage` sets the message when it is accepted, `AnalyzeSentiment` sets it again with
`sentiment` and `sentiment_score`. Clients follow a room over WebSocket (`/streams`) or SSE
(`/streams/chat/<room>`); see docs/streams.md and the page at /examples/chat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ChatMessage(BaseModel):
    """One message as subscribers see it."""

    id: str
    author: str = Field(description="who wrote it (the user's id or display name)")
    text: str = Field(min_length=1, max_length=2000)
    created_at: datetime
    sentiment: Literal["positive", "negative", "neutral"] | None = Field(
        None, description="None until the message has been analysed"
    )
    sentiment_score: float | None = None


# Any signed-in user may follow any room. For member-only rooms, add
#   "authorize": is_member,   # async def is_member(user, room) -> bool
config = {
    "name": "chat",
    "schema": ChatMessage,
    "description": "Messages of a room and their sentiment, live (group_id = room)",
    "flows": ["messages"],
}
