"""GET /api/limited: the article's rate-limited endpoint, 100 requests a minute per client.

The limit itself is the platform's (`rate_limit` in the config; any API step can have one):
over it, 429 with `Retry-After`; every answer carries `X-RateLimit-Limit/Remaining/Reset`.
"""

from pydantic import BaseModel

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context


class Limited(BaseModel):
    ok: bool


config = {
    "name": "RateLimitedEndpoint",
    "type": "api",
    "path": "/api/limited",
    "method": "GET",
    "rate_limit": "100/minute",
    "responses": {200: Limited, 401: ErrorEnvelope, 429: ErrorEnvelope},
    "flows": ["system"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    return {"status": 200, "body": {"ok": True}}
