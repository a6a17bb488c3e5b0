"""GET /users/{id}: one user, or 404."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.users import service
from steps.users.schemas import UserOut

config = {
    "name": "GetUser",
    "type": "api",
    "path": "/users/{id}",
    "method": "GET",
    "responses": {200: UserOut, 401: ErrorEnvelope, 404: ErrorEnvelope},
    "flows": ["users"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        user = await service.get_user(session, req.params["id"])
        return {"status": 200, "body": UserOut.model_validate(user)}
