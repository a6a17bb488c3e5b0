"""POST /bench/tick: set the benchmark's item (its `t` is taken just before `set`)."""

import time

from pydantic import BaseModel

from app.runtime import ApiRequest, Context


class TickIn(BaseModel):
    n: int
    pad: int = 0


config = {
    "name": "BenchTick",
    "type": "api",
    "path": "/bench/tick",
    "method": "POST",
    "body": TickIn,
    "auth": "public",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    body = req.body
    await ctx.streams.fanout.set(
        "all", "tick", {"n": body.n, "t": time.time(), "pad": "x" * body.pad}
    )
    return {"status": 202, "body": {"ok": True}}
