"""POST /auth/register: create an account (role `user`) with an email and a password."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from app.security import passwords
from steps.auth import service
from steps.auth.schemas import Register
from steps.users.schemas import UserOut

config = {
    "name": "Register",
    "type": "api",
    "path": "/auth/register",
    "method": "POST",
    "auth": "public",
    "body": Register,
    "rate_limit": "10/minute",
    "responses": {201: UserOut, 400: ErrorEnvelope, 409: ErrorEnvelope, 429: ErrorEnvelope},
    "flows": ["auth"],
    "description": "Sign up: 201 with the account; 409 when the email is taken (in any case).",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    user = await service.register(await ctx.session(), req.body, passwords())
    ctx.logger.info("account registered", user_id=str(user.id))
    return {"status": 201, "body": UserOut.model_validate(user)}
