"""The database failing under a request is the server's trouble, not a bug: 503
`database_unavailable` or 507 `insufficient_storage` in the envelope, with Retry-After,
translated; a bug (a bad statement, a handler's own connection failing) stays a 500."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event

from app.i18n import translate
from tests.accounts import assert_envelope
from tests.runtime.conftest import step_app

STEPS = {
    "fault_step.py": """
        from sqlalchemy import text
        config = {"name": "Fault", "type": "api", "path": "/fault", "method": "POST",
                  "auth": "public"}
        async def handler(req, ctx):
            session = await ctx.session()
            await session.execute(text("SELECT 'fault'"))
            return {"status": 201, "body": {"ok": True}}
    """,
    "upstream_step.py": """
        config = {"name": "Upstream", "type": "api", "path": "/upstream", "method": "POST",
                  "auth": "public"}
        async def handler(req, ctx):
            raise ConnectionRefusedError(111, "a payment provider refused the connection")
    """,
}

FAULTS: dict[str, Callable[[], BaseException]] = {
    "postgres down": lambda: psycopg.OperationalError("connection refused"),
    "postgres shutting down": lambda: psycopg.errors.AdminShutdown("terminating connection"),
    "sqlite locked": lambda: sqlite3.OperationalError("database is locked"),
    "connection reset": lambda: ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    "postgres disk full": lambda: psycopg.errors.DiskFull("could not extend file"),
    "sqlite disk full": lambda: sqlite3.OperationalError("database or disk is full"),
    "no space left": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "a bad statement": lambda: sqlite3.OperationalError('near "SELEC": syntax error'),
    "a broken constraint": lambda: sqlite3.IntegrityError("UNIQUE constraint failed"),
}
EXPECTED = {
    "postgres down": (503, "database_unavailable"),
    "postgres shutting down": (503, "database_unavailable"),
    "sqlite locked": (503, "database_unavailable"),
    "connection reset": (503, "database_unavailable"),
    "postgres disk full": (507, "insufficient_storage"),
    "sqlite disk full": (507, "insufficient_storage"),
    "no space left": (507, "insufficient_storage"),
    "a bad statement": (500, "internal"),
    "a broken constraint": (500, "internal"),
}


def fail_statements(client: httpx.AsyncClient, marker: str, error: Callable[[], Any]) -> None:
    """Every statement of the app's engine that contains `marker` raises `error()`."""
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if marker in statement:
            raise error()


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_the_database_failing_under_a_request_is_a_clean_envelope(
    tmp_path: Path, db_url: str, fault: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        fail_statements(client, "'fault'", FAULTS[fault])
        response = await client.post("/fault")
    status, code = EXPECTED[fault]
    assert_envelope(response, status, code)
    if status != 500:
        assert int(response.headers["retry-after"]) > 0


async def test_outage_envelopes_are_translated(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        fail_statements(client, "'fault'", FAULTS["postgres down"])
        texts = {
            locale: assert_envelope(
                await client.post("/fault", headers={"Accept-Language": locale}),
                503,
                "database_unavailable",
            )["error"]
            for locale in ("en", "vi", "ja")
        }
    assert texts == {
        locale: translate("error.database_unavailable", locale) for locale in ("en", "vi", "ja")
    }
    assert len(set(texts.values())) == 3
    full = {translate("error.insufficient_storage", locale) for locale in ("en", "vi", "ja")}
    assert len(full) == 3


async def test_a_handlers_own_connection_failing_is_not_a_database_outage(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        response = await client.post("/upstream")
    assert_envelope(response, 500, "internal")
