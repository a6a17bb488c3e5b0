"""Approved content is published: marked in state, and counted once however often the event
comes."""

from __future__ import annotations

from typing import Any

from app.runtime import Context, Event
from steps.content.schemas import ContentApproved
from steps.content.service import PUBLISHED_GROUP, STATS_GROUP

config = {
    "name": "PublishContent",
    "type": "event",
    "subscribes": ["content.approved"],
    "input": ContentApproved,
    "flows": ["content"],
    "description": f"Marks the item in state `{PUBLISHED_GROUP}` and counts it in "
    f"`{STATS_GROUP}/approved` (a second delivery of the same event counts nothing).",
}


async def handler(event: Event, ctx: Context) -> None:
    approved: ContentApproved = event.data
    published_at = ctx.now().isoformat()
    first = False

    def mark(current: Any) -> Any:
        # Compare-and-set under the row lock: of two deliveries, only one finds no mark.
        nonlocal first
        if current is not None:
            return current
        first = True
        return {"published_at": published_at, "score": approved.score}

    await ctx.state.update(PUBLISHED_GROUP, str(approved.id), mark)
    if first:
        total = await ctx.state.increment(STATS_GROUP, "approved")
        ctx.logger.info("Content published", content_id=str(approved.id), approved=total)
    else:
        ctx.logger.info("Content already published", content_id=str(approved.id))
