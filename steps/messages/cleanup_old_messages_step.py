"""Daily: deletes the messages older than MESSAGE_RETENTION_DAYS, with their history entries."""

from datetime import timedelta

from app.runtime import Context
from app.settings import get_settings
from steps.messages import service

config = {
    "name": "CleanupOldMessages",
    "type": "cron",
    "schedule": "0 0 * * *",
    "flows": ["messages"],
    "description": "At midnight UTC: deletes messages older than MESSAGE_RETENTION_DAYS (7 by "
    "default) from the table, the rooms' history in state and the `chat` stream.",
}


async def handler(_: None, ctx: Context) -> None:
    cutoff = ctx.now() - timedelta(days=get_settings().message_retention_days)
    removed = await service.delete_messages_before(await ctx.session(), cutoff)
    pruned = await service.prune_history(ctx.state, cutoff)
    for message_id, room in removed:
        await ctx.streams.chat.delete(room, str(message_id))
    ctx.logger.info(
        "old messages removed",
        removed=len(removed),
        history_pruned=pruned,
        before=cutoff.isoformat(),
    )
