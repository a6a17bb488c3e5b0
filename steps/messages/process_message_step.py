"""Stores each message sent, counts it and keeps its room's recent history in state."""

from app.runtime import Context, Event
from app.settings import get_settings
from steps.messages import service
from steps.messages.schemas import MessageSent

config = {
    "name": "ProcessMessage",
    "type": "event",
    "subscribes": ["message.sent"],
    "input": MessageSent,
    "retry": {"max_attempts": 3, "backoff": "exponential", "delay": 1, "timeout": 30},
    "flows": ["messages"],
    "description": "Stores the message (an upsert by id: a repeated delivery changes nothing) "
    "and keeps `messages/count` and `messages_history/<room>` in state.",
}


async def handler(event: Event, ctx: Context) -> None:
    message: MessageSent = event.data
    stored = await service.store_message(
        await ctx.session(),
        ctx.state,
        message,
        history_size=get_settings().message_history_size,
    )
    ctx.logger.info(
        "message stored" if stored else "message already stored",
        id=str(message.id),
        room=message.room,
    )
