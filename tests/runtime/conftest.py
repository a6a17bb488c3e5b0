"""Runtime tests: apps built from step folders written by the test itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from app.runtime import Clock
from tests.conftest import make_settings
from tests.support import write_steps


def user_from_token(token: str) -> dict[str, str] | None:
    """The user a test token names: `id:role` (or just `id`); anything with a space is invalid."""
    if not token or " " in token or token.startswith("bad"):
        return None
    user_id, _, role = token.partition(":")
    return {"id": user_id, "role": role or "user"}


async def authenticate_test_token(token: str) -> dict[str, str] | None:
    """For `runtime.set_stream_authenticator`: a WebSocket's first message signs in with it."""
    return user_from_token(token)


class HeaderUser:
    """Test stand-in for the auth middleware: `X-Test-User: id:role` signs a user in, on HTTP
    and WebSocket scopes; a WebSocket may also pass `?token=id:role`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope["headers"]:
                if name == b"x-test-user":
                    scope["user"] = user_from_token(value.decode())
            if scope["type"] == "websocket" and scope.get("user") is None:
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                if "token" in query:
                    scope["user"] = user_from_token(query["token"])
        await self.app(scope, receive, send)


@asynccontextmanager
async def step_app(
    tmp_path: Path,
    db_url: str,
    files: dict[str, str],
    *,
    role: str = "dev",
    clock: Clock | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    from app.main import create_app

    steps_dir = write_steps(tmp_path, files)
    settings = make_settings(db_url, steps_dir=steps_dir, **overrides)
    app = create_app(settings, role=role, clock=clock)  # type: ignore[arg-type]
    app.add_middleware(HeaderUser)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
