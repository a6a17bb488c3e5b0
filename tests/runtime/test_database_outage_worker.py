"""A handler cut short by the application database failing (down, or its disk full) is given
back: the attempt does not count, so an outage never dead-letters a healthy event; a handler's
own connection to another service failing is a failure like any other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from app.runtime import Runtime, _store
from app.runtime._unit import Unit
from tests.runtime.conftest import step_app
from tests.support import eventually

STEPS = {
    "store_step.py": """
        from sqlalchemy import text
        config = {"name": "Store", "type": "event", "subscribes": ["store"],
                  "retry": {"max_attempts": 1}}
        async def handler(event, ctx):
            session = await ctx.session()
            await session.execute(text("SELECT 'store-fault'"))
            await ctx.state.set("store", event.id, ctx.attempt)
    """,
    "upstream_step.py": """
        config = {"name": "Upstream", "type": "event", "subscribes": ["upstream"],
                  "retry": {"max_attempts": 2, "delay": 0}}
        async def handler(event, ctx):
            raise ConnectionRefusedError(111, "the mail server refused the connection")
    """,
}


@pytest.mark.parametrize(
    "failure",
    [
        lambda: psycopg.OperationalError("server closed the connection unexpectedly"),
        lambda: psycopg.errors.DiskFull("could not extend file: No space left on device"),
    ],
    ids=["connection lost", "disk full"],
)
async def test_an_attempt_the_database_cut_short_is_given_back_and_does_not_count(
    tmp_path: Path, db_url: str, failure: Callable[[], Exception]
) -> None:
    failures = {"left": 2}
    async with step_app(tmp_path, db_url, STEPS) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]

        @event.listens_for(runtime.engine.sync_engine, "before_cursor_execute")
        def _down(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "'store-fault'" in statement and failures["left"] > 0:
                failures["left"] -= 1
                raise failure()

        event_id = await runtime.emit("store", {})
        attempt = await eventually(
            lambda: Unit(runtime.engine, runtime.clock.now).get("store", event_id), timeout=20
        )
        dead = await runtime.dead_letters()
    assert failures["left"] == 0  # it was cut short twice...
    assert attempt == 1  # ...and the run that went through is still its first attempt
    assert dead == []


async def test_a_handlers_own_connection_failing_counts_as_a_failed_attempt(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, STEPS) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        await runtime.emit("upstream", {})
        dead = await eventually(runtime.dead_letters, timeout=20)
    assert dead[0]["attempts"] == 2
    assert "ConnectionRefusedError" in dead[0]["errors"][-1]["error"]


async def test_a_claim_whose_answer_is_lost_gives_its_leases_back_at_once(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Postgres a claim is one statement in autocommit: when the server ran it but the answer
    never came, the deliveries it leased are given back as soon as the database answers, not
    after their lease (15 s) runs out, and the lost claim's attempt does not count."""
    lost = {"left": 1}
    async with step_app(tmp_path, pg_url, STEPS) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]

        # Claims go straight to psycopg (`_db.pg_rows`): the server runs the claim, then its
        # answer is lost on the way back.
        send = _store.pg_rows

        async def _lose_the_answer(conn: Any, sql: str, params: Any) -> list[Any]:
            rows = await send(conn, sql, params)
            claims = (_store._CLAIM_PG_SQL, _store._CLAIM_OR_DUE_PG_SQL)
            # (an empty claim's one row, NULLs then its timers, leased nothing)
            if sql in claims and rows and rows[0][0] is not None and lost["left"] > 0:
                lost["left"] -= 1
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return rows

        monkeypatch.setattr(_store, "pg_rows", _lose_the_answer)

        event_id = await runtime.emit("store", {})
        attempt = await eventually(
            lambda: Unit(runtime.engine, runtime.clock.now).get("store", event_id), timeout=5
        )
    assert lost["left"] == 0  # the claim that leased it did not hear back...
    assert attempt == 1  # ...and the delivery ran well within its lease, as its first attempt
