"""GET /health: the process is up. Touches nothing else, so it stays fast and always answers."""

from pydantic import BaseModel

from app.runtime import ApiRequest, Context


class Health(BaseModel):
    status: str


config = {
    "name": "Health",
    "type": "api",
    "path": "/health",
    "method": "GET",
    "auth": "public",
    "responses": {200: Health},
    "flows": ["system"],
    "description": "Liveness probe: 200 while the process serves requests.",
}

_OK = {"status": 200, "body": {"status": "ok"}}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    return _OK
