"""The observability benchmark's API step without database work: validate, log, reply.

Recording is the largest share of a request here: the strictest measure of its cost."""

from pydantic import BaseModel, Field

from app.runtime import ApiRequest, Context


class EchoIn(BaseModel):
    text: str = Field(min_length=1, max_length=200)


config = {
    "name": "BenchEcho",
    "type": "api",
    "path": "/echo",
    "method": "POST",
    "auth": "public",
    "body": EchoIn,
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    ctx.logger.info("echo", size=len(req.body.text))
    return {"status": 202, "body": {"text": req.body.text}}
