"""The observability benchmark's API step: validate, log, emit, reply 202."""

from pydantic import BaseModel, Field

from app.runtime import ApiRequest, Context


class IngestIn(BaseModel):
    text: str = Field(min_length=1, max_length=200)


config = {
    "name": "BenchIngest",
    "type": "api",
    "path": "/ingest",
    "method": "POST",
    "auth": "public",
    "body": IngestIn,
    "emits": ["item.ingested"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    ctx.logger.info("ingested", size=len(req.body.text))
    await ctx.emit({"topic": "item.ingested", "data": {"text": req.body.text}})
    return {"status": 202, "body": {"ok": True}}
