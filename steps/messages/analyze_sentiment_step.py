"""Labels each message sent positive, negative or neutral with VADER, an offline model."""

from app.runtime import Context, Event
from app.settings import get_settings
from steps.messages import service
from steps.messages.schemas import MessageSent

config = {
    "name": "AnalyzeSentiment",
    "type": "event",
    "subscribes": ["message.sent"],
    "input": MessageSent,
    "emits": ["message.analyzed"],
    "retry": {"max_attempts": 3, "backoff": "exponential", "delay": 1, "timeout": 30},
    "flows": ["messages"],
    "description": "VADER's compound score: positive >= 0.05, negative <= -0.05, else "
    "neutral. Writes it on the message (storing the message first if ProcessMessage has not), "
    "emits `message.analyzed` and updates the `chat` stream.",
}


async def handler(event: Event, ctx: Context) -> None:
    message: MessageSent = event.data
    analysis = await service.analyze(message.text)
    changed = await service.store_sentiment(
        await ctx.session(),
        ctx.state,
        message,
        analysis,
        now=ctx.now(),
        history_size=get_settings().message_history_size,
    )
    log = {"id": str(message.id), "label": analysis.label, "score": analysis.score}
    if not changed:
        ctx.logger.info("sentiment already recorded", **log)
        return
    await ctx.emit(
        {
            "topic": "message.analyzed",
            "data": {"id": str(message.id), "room": message.room, **log},
        }
    )
    await ctx.streams.chat.set(message.room, str(message.id), service.chat_item(message, analysis))
    ctx.logger.info("sentiment analysed", **log)
