"""The Python step between two TypeScript/JavaScript ones: analyses each message sent."""

from __future__ import annotations

from app.runtime import Context, Event
from steps.polyglot.schemas import MessageSent
from steps.polyglot.service import analyze

config = {
    "name": "PolyglotAnalyzeMessage",
    "type": "event",
    "subscribes": ["polyglot.message.sent"],
    "input": MessageSent,
    "emits": ["polyglot.message.analyzed"],
    "flows": ["polyglot"],
}


async def handler(event: Event, ctx: Context) -> None:
    message: MessageSent = event.data
    analysis = analyze(message.text)
    ctx.logger.info("Message analysed", id=message.id, **analysis)
    await ctx.emit({"topic": "polyglot.message.analyzed", "data": {"id": message.id, **analysis}})
