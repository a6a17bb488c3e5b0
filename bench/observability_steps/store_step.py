"""The observability benchmark's event step: log and one state write."""

from app.runtime import Context, Event

config = {"name": "BenchStore", "type": "event", "subscribes": ["item.ingested"]}


async def handler(event: Event, ctx: Context) -> None:
    ctx.logger.info("stored", id=event.id)
    await ctx.state.set("items", event.id, event.data)
