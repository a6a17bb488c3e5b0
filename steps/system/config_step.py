"""GET /config: the environment, the version and the settings a client may see, never a secret."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.system.service import PublicConfig, public_config

config = {
    "name": "GetConfig",
    "type": "api",
    "path": "/config",
    "method": "GET",
    "responses": {200: PublicConfig, 401: ErrorEnvelope},
    "flows": ["system"],
    "description": "Public settings only: an explicit list, so a new secret setting never leaks.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    return {"status": 200, "body": public_config()}
