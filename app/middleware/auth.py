"""Bearer-token authentication (pure ASGI): puts the signed-in user on `scope["user"]`.

The route decides what it needs (the step's `auth` level): this middleware only says who is
asking. No token: `scope["user"]` is None. A token that is malformed, wrongly signed, signed with
another algorithm (`alg=none` included), expired, or whose user no longer exists leaves the user
None and records why in `scope["auth_error"]`; a route that needs a user then answers 401 with
code `invalid_token` (public routes ignore a bad token, so a client holding a stale one can
still log in).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts import NoUsersTableError, principal_cache, read_principal
from app.fields import parse_uuid
from app.middleware.outage import DATABASE_UNAVAILABLE, outage_of, outage_response
from app.runtime import get_logger
from app.security import JwtCodec, Principal, TokenError

if TYPE_CHECKING:
    from app.runtime import Runtime

log = get_logger(component="auth")


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, *, codec: JwtCodec, runtime: Runtime, cache_seconds: float
    ) -> None:
        self.app = app
        self.codec = codec
        self.runtime = runtime
        self.cache_seconds = cache_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope.get("user") is not None:
            # An outer layer (a gateway adapter, a test harness) already said who this is.
            await self.app(scope, receive, send)
            return
        scope["user"] = None
        token = _bearer_token(scope)
        if token is not None:
            try:
                scope["user"] = await self._principal(token)
            except TokenError as exc:
                scope["auth_error"] = exc.reason
            except (SQLAlchemyError, OSError) as exc:
                log.warning("cannot check a token: database unavailable", error=str(exc))
                if scope["type"] == "http":
                    response = outage_response(scope, outage_of(exc) or DATABASE_UNAVAILABLE)
                    await response(scope, receive, send)
                    return
                scope["auth_error"] = "invalid"
        if scope["user"] is not None:
            structlog.contextvars.bind_contextvars(user_id=scope["user"].id)
        try:
            await self.app(scope, receive, send)
        finally:
            structlog.contextvars.unbind_contextvars("user_id")

    async def _principal(self, token: str) -> Principal:
        claims = self.codec.decode(token)
        user_id = parse_uuid(claims["sub"])
        if user_id is None:
            raise TokenError("invalid")
        principal = await self._load(user_id)
        if principal is None:
            raise TokenError("invalid")  # the account was deleted
        return principal

    async def _load(self, user_id: uuid.UUID) -> Principal | None:
        key = str(user_id)
        now = self.runtime.clock.now()
        if self.cache_seconds > 0:
            hit, principal = principal_cache.get(key, now)
            if hit:
                return principal
        try:
            async with self.runtime.read_connection() as conn:
                principal = await read_principal(conn, user_id)
        except NoUsersTableError:
            return None
        if self.cache_seconds > 0:
            principal_cache.put(key, principal, now + self.cache_seconds)
        return principal


def token_authenticator(
    *, codec: JwtCodec, runtime: Runtime, cache_seconds: float
) -> Callable[[str], Awaitable[Principal | None]]:
    """The same token check as the middleware, for a WebSocket that signs in with its first
    message (`{"auth": {"token": ...}}`): the user, or None for any bad token."""
    checker = AuthMiddleware(_no_app, codec=codec, runtime=runtime, cache_seconds=cache_seconds)

    async def authenticate(token: str) -> Principal | None:
        try:
            return await checker._principal(token)
        except TokenError:
            return None

    return authenticate


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("token_authenticator's checker is not an ASGI app")


def _bearer_token(scope: Scope) -> str | None:
    """The token of `Authorization: Bearer <token>` ("" when the header is there but wrong);
    on a WebSocket, `?token=` works too (browsers cannot set headers there)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    if scope["type"] == "websocket":
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if tokens:
            return str(tokens[0])
    return None
