"""The article's AIContentModerator: offline models decide, the verdict goes on the row and out
as `content.flagged` (with a reason) or `content.approved`."""

from __future__ import annotations

import asyncio

from app.runtime import Context, Event
from app.settings import get_settings
from steps.content import service
from steps.content.moderation import moderate
from steps.content.schemas import ContentSubmitted

config = {
    "name": "AIContentModerator",
    "type": "event",
    "subscribes": ["content.submitted"],
    "input": ContentSubmitted,
    "emits": ["content.flagged", "content.approved"],
    "retry": {"max_attempts": 3, "backoff": "exponential", "delay": 1, "timeout": 30},
    "flows": ["content"],
    "description": "Profanity word list (better-profanity), then VADER sentiment at or below "
    "MODERATION_NEGATIVE_THRESHOLD; anything else is approved.",
}


async def handler(event: Event, ctx: Context) -> None:
    submitted: ContentSubmitted = event.data
    # Read outside the unit of work: no write lock is held while the models run.
    async with ctx.reader() as reader:
        item = await service.find(reader, submitted.id)
        pending = item is not None and item.status == "pending"
        text = item.text if item is not None else ""
    if not pending:
        ctx.logger.info("Content already moderated or gone", content_id=str(submitted.id))
        return
    threshold = get_settings().moderation_negative_threshold
    verdict = await asyncio.to_thread(moderate, text, negative_threshold=threshold)
    if not await service.record_verdict(await ctx.session(), submitted.id, verdict, ctx.now()):
        ctx.logger.info("Content moderated by another delivery", content_id=str(submitted.id))
        return
    content_id = str(submitted.id)
    if verdict.flagged:
        data = {"id": content_id, "reason": verdict.reason, "score": verdict.score}
        await ctx.emit({"topic": "content.flagged", "data": data})
    else:
        data = {"id": content_id, "score": verdict.score}
        await ctx.emit({"topic": "content.approved", "data": data})
    ctx.logger.info(
        "Content moderated", content_id=content_id, flagged=verdict.flagged, reason=verdict.reason
    )
