"""POST /auth/login: trade an email and a password for a bearer access token."""

from app.middleware.errors import ErrorEnvelope
from app.middleware.ratelimit import login_attempt
from app.runtime import ApiRequest, Context
from app.security import passwords
from steps.auth import service
from steps.auth.schemas import Login, TokenOut

config = {
    "name": "Login",
    "type": "api",
    "path": "/auth/login",
    "method": "POST",
    "auth": "public",
    "body": Login,
    "rate_limit": "20/minute",  # per address; failures per account: LOGIN_MAX_FAILURES
    "responses": {200: TokenOut, 400: ErrorEnvelope, 401: ErrorEnvelope, 429: ErrorEnvelope},
    "flows": ["auth"],
    "description": "401 with the same message for an unknown email and a wrong password; 429 "
    "after too many failures for one account (from any address) or too many attempts from one "
    "address.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    # Failures count per account across addresses; the check only reads, so the counter's own
    # write never waits on this step's transaction.
    async with login_attempt(req, service.account_of(req.body.email)), ctx.reader() as reader:
        user, new_hash = await service.check_credentials(
            reader, req.body.email, req.body.password, passwords()
        )
    if new_hash is not None:
        await service.store_new_hash(await ctx.session(), user, new_hash)
    token = service.issue_token(user)
    ctx.logger.info("logged in", user_id=str(user.id))
    body = TokenOut(access_token=token.token, expires_in=token.expires_in)
    return {"status": 200, "body": body, "headers": {"Cache-Control": "no-store"}}
