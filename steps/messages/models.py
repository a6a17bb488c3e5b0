"""The `messages` table: every accepted message, with its sentiment once analysed.

The id is chosen by POST /messages and carried by `message.sent`, so ProcessMessage and
AnalyzeSentiment (which may run in either order, and more than once) both upsert by it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Float, Index, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(
            "sentiment IS NULL OR sentiment IN ('positive', 'negative', 'neutral')",
            name="sentiment_known",
        ),
        # GET /messages (newest first) and CleanupOldMessages (older than the retention).
        Index("ix_messages_created_at", "created_at"),
        Index("ix_messages_room_created_at", "room", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    room: Mapped[str] = mapped_column(String(64), default="general")
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sentiment: Mapped[str | None] = mapped_column(String(8))
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    analyzed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
