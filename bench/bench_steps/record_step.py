"""The benchmark's handler: one state write (the emit -> start latency, in ms)."""

import time

from app.runtime import Context, Event

config = {"name": "BenchRecord", "type": "event", "subscribes": ["bench.tick"]}


async def handler(event: Event, ctx: Context) -> None:
    await ctx.state.set("bench", event.id, (time.time() - event.data["t"]) * 1000)
