"""PATCH /users/{id}: change your own account (an admin: anyone's, and roles)."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.users import service
from steps.users.schemas import UpdateUser, UserOut

config = {
    "name": "UpdateUser",
    "type": "api",
    "path": "/users/{id}",
    "method": "PATCH",
    "body": UpdateUser,
    "responses": {
        200: UserOut,
        400: ErrorEnvelope,
        401: ErrorEnvelope,
        403: ErrorEnvelope,
        404: ErrorEnvelope,
        409: ErrorEnvelope,
    },
    "flows": ["users"],
    "description": "Self or admin; only an admin changes `role`. 409 if the new email is taken.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    session = await ctx.session()
    user = await service.update_user(session, req.user, req.params["id"], req.body)
    ctx.logger.info("user updated", user_id=str(user.id), fields=sorted(req.body.model_fields_set))
    return {"status": 200, "body": UserOut.model_validate(user)}
