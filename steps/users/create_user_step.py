"""POST /users: add a user to the directory (the article's CreateUser); any signed-in user."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.users import service
from steps.users.schemas import CreateUser, UserOut

config = {
    "name": "CreateUser",
    "type": "api",
    "path": "/users",
    "method": "POST",
    "body": CreateUser,
    "responses": {201: UserOut, 400: ErrorEnvelope, 401: ErrorEnvelope, 409: ErrorEnvelope},
    "flows": ["users"],
    "description": "Create a user (email, name of 2-100 characters, age >= 18); 409 if the email "
    "is taken. Such a user has no password and cannot log in.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    user = await service.create_user(await ctx.session(), req.body)
    ctx.logger.info("user created", user_id=str(user.id))
    return {"status": 201, "body": UserOut.model_validate(user)}
