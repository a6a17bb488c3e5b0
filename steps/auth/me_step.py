"""GET /auth/me: the signed-in account."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.users import service
from steps.users.schemas import UserOut

config = {
    "name": "Me",
    "type": "api",
    "path": "/auth/me",
    "method": "GET",
    "responses": {200: UserOut, 401: ErrorEnvelope},
    "flows": ["auth"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        user = await service.get_user(session, req.user.id)
        return {"status": 200, "body": UserOut.model_validate(user)}
