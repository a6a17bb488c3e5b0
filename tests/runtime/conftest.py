"""Runtime tests: apps built from step folders written by the test itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from app.runtime import Clock
from tests.conftest import make_settings
from tests.support import write_steps


class HeaderUser:
    """Test stand-in for the auth middleware: `X-Test-User: id:role` signs a user in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-user":
                    user_id, _, role = value.decode().partition(":")
                    scope["user"] = {"id": user_id, "role": role or "user"}
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
