"""DELETE /users/{id}: remove a user (admins only); their tokens stop working."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.users import service

config = {
    "name": "DeleteUser",
    "type": "api",
    "path": "/users/{id}",
    "method": "DELETE",
    "auth": "admin",
    "responses": {204: None, 401: ErrorEnvelope, 403: ErrorEnvelope, 404: ErrorEnvelope},
    "flows": ["users"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    await service.delete_user(await ctx.session(), req.params["id"])
    ctx.logger.info("user deleted", user_id=req.params["id"], by=req.user.id)
    return {"status": 204, "body": None}
