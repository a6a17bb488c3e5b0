"""The content feature's logic: store a submission, read it back, record the moderator's verdict.

Services take a session and never commit: the step's unit of work commits the row together with
the step's emits (or nothing at all when the handler raises).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.fields import parse_uuid
from app.runtime import NotFound
from app.security import Principal
from steps.content.models import ContentItem
from steps.content.moderation import Verdict

PUBLISHED_GROUP = "content_published"  # state: content id -> when it was published
STATS_GROUP = "content_stats"  # state: "approved" -> how many items were published


def content_not_found() -> NotFound:
    return NotFound(message_key="error.content_not_found")


async def submit(session: AsyncSession, author: str, text: str, now: datetime) -> ContentItem:
    item = ContentItem(author=author, text=text, status="pending", created_at=now)
    session.add(item)
    await session.flush()
    return item


async def find(session: AsyncSession, content_id: Any) -> ContentItem | None:
    parsed = parse_uuid(content_id)
    return await session.get(ContentItem, parsed) if parsed is not None else None


async def get_for(session: AsyncSession, actor: Principal, content_id: Any) -> ContentItem:
    """The item for its author or an admin. Anyone else gets the same 404 as for an unknown id,
    so ids cannot be probed."""
    item = await find(session, content_id)
    if item is None or not (actor.is_admin or item.author == str(actor.id)):
        raise content_not_found()
    return item


async def record_verdict(
    session: AsyncSession, content_id: uuid.UUID, verdict: Verdict, now: datetime
) -> bool:
    """Write the verdict on a pending row; False when the row is no longer pending (a duplicate
    delivery, already moderated) or gone, and then the row is left as it is.

    One conditional UPDATE, so two deliveries racing for the same row cannot both win: on
    Postgres the second waits for the first's row lock and then finds the row moderated; on
    SQLite writers are serialised.
    """
    result = await session.execute(
        update(ContentItem)
        .where(ContentItem.id == content_id, ContentItem.status == "pending")
        .values(
            status=verdict.status,
            reason=verdict.reason,
            sentiment_score=verdict.score,
            moderated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
