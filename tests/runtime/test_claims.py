"""How a worker finds work: a claim reads the queue in its index's order and stops at its limit
however long the backlog, and work that is due but must wait is not polled in a busy loop."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from app.runtime import Runtime, _store
from app.runtime._db import one_statement, write_transaction
from tests.runtime.conftest import step_app
from tests.support import eventually, runtime_of

STEPS = {
    "noop_step.py": """
        config = {"name": "Noop", "type": "event", "subscribes": ["noop"]}
        async def handler(event, ctx):
            await ctx.state.set("noop", event.id, True)
    """,
    "grouped_step.py": """
        import asyncio
        SEEN = []
        config = {"name": "Grouped", "type": "event", "subscribes": ["grouped"]}
        async def handler(event, ctx):
            SEEN.append(event.data["n"])
            if event.data["n"] == 1:
                await asyncio.sleep(event.data["seconds"])
    """,
}


async def test_a_claim_reads_the_queue_in_order_and_stops_at_its_limit_whatever_the_backlog(
    tmp_path: Path, any_db_url: str
) -> None:
    """A backlog of 3,000 deliveries and no planner statistics (a fresh database, as after a
    burst): the claim's plan walks the queue index in order (no sort of the backlog)."""
    async with step_app(tmp_path, any_db_url, STEPS, worker_concurrency=4) as client:
        runtime: Runtime = runtime_of(client)

        for _ in range(6):
            await runtime.emit_many([{"topic": "noop", "data": {}}] * 500)
        # Claims go straight to the driver (no SQLAlchemy event sees them): plan the very SQL
        # they send, with a worker's parameters, while the backlog is there.
        await eventually(lambda: _done_some(runtime))
        now = time.time()
        params = {
            "steps": ["Noop"],
            "now": now,
            "limit": 4,
            "token_prefix": "plan:1:",
            "owner": "plan",
            "expires_at": now + 15,
        }
        if runtime.is_sqlite:
            statement = _store._CLAIM_SQLITE_SQL
            params = {**_store._CLAIM_SQLITE_CONSTANTS, **params, "steps": '["Noop"]'}
        else:  # the claim a worker sends: it answers the idle timers too when it finds nothing
            statement = _store._CLAIM_OR_DUE_PG_SQL
            params["all_steps"] = ["Noop"]
        plan = await _plan(runtime, statement, params)
    assert "ix_stepwise_deliveries_queue" in plan, plan
    if runtime.is_sqlite:
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert '"Sort"' not in plan and "Incremental Sort" not in plan, plan


async def _plan(runtime: Runtime, statement: str, params: Any) -> str:
    async with runtime.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        if runtime.is_sqlite:
            rows = raw._conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
            return "\n".join(str(r[-1]) for r in rows)
        async with raw.cursor() as cursor:
            await cursor.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            (document,) = await cursor.fetchone()
        await conn.rollback()
        return json.dumps(document)


async def test_a_delivery_waiting_on_its_groups_head_is_not_polled_in_a_busy_loop(
    tmp_path: Path, any_db_url: str
) -> None:
    """While the head of a message group runs (1 s), the next one of the group is due but not
    claimable: the idle worker looks again after waits that double, and at once when the head
    finishes, instead of asking the database in a loop."""
    statements = [0]
    async with step_app(tmp_path, any_db_url, STEPS) as client:
        runtime = runtime_of(client)
        seen = sys.modules[runtime.registry.get("Grouped").module].SEEN

        @event.listens_for(runtime.engine.sync_engine, "before_cursor_execute")
        def _count(*args: Any) -> None:
            statements[0] += 1

        await runtime.emit_many(
            [
                {"topic": "grouped", "data": {"n": n, "seconds": 1.0}, "message_group_id": "g"}
                for n in (1, 2)
            ]
        )
        await eventually(lambda: _async(seen == [1]))
        statements[0] = 0
        started = time.monotonic()
        await eventually(lambda: _async(seen == [1, 2]), timeout=10)
        waited = time.monotonic() - started
        during = statements[0]
    assert seen == [1, 2]
    # A busy loop would have sent thousands of statements in that second; the doubling waits
    # (10 ms, 20 ms, 40 ms...) and the wake-up at the head's end send a few dozen at most.
    assert during < 60, (during, waited)


async def _done_some(runtime: Runtime) -> bool:
    async with runtime.read_connection() as conn:
        done = await conn.execute(
            text("SELECT count(*) FROM stepwise_deliveries WHERE status = 'done'")
        )
        return bool(done.scalar_one())


async def _async(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


async def test_busy_postgres_workers_vacuum_the_queue_table_themselves(
    tmp_path: Path, pg_url: str, monkeypatch: Any
) -> None:
    """Autovacuum looks once a minute at most: meanwhile every claim would walk the dead
    `pending` index entries of what already ran. A worker whose claims changed enough rows
    vacuums the queue table itself, in the background."""
    from sqlalchemy import text

    from app.runtime import _worker

    monkeypatch.setattr(_worker, "VACUUM_AFTER_CHANGES", 100)
    monkeypatch.setattr(_worker, "VACUUM_MIN_SECONDS", 0.0)

    async def vacuums(runtime: Runtime) -> int:
        async with runtime.read_connection() as conn:
            count = await conn.scalar(
                text(
                    "SELECT vacuum_count FROM pg_stat_user_tables "
                    "WHERE relname = 'stepwise_deliveries'"
                )
            )
        return int(count or 0)

    async with step_app(tmp_path, pg_url, STEPS, worker_concurrency=8) as client:
        runtime: Runtime = runtime_of(client)
        before = await vacuums(runtime)
        for _ in range(3):
            await runtime.emit_many([{"topic": "noop", "data": {}}] * 60)
            await asyncio.sleep(0.1)
        await eventually(lambda: _async(runtime.worker is not None and not runtime.worker._held))
        await eventually(lambda: _more(vacuums(runtime), before))
        quiet = await vacuums(runtime)
        await asyncio.sleep(0.5)  # idle: nothing changed, so no vacuum
        assert await vacuums(runtime) == quiet


async def _more(count: Any, than: int) -> bool:
    return bool(await count > than)


async def test_an_ack_finds_its_leases_by_token_however_many(
    tmp_path: Path, any_db_url: str
) -> None:
    """One ack of 1,100 leases (and a token no lease holds) marks exactly those deliveries done,
    in one statement on SQLite (its tokens bound as one JSON array), through the lease index."""
    async with step_app(tmp_path, any_db_url, STEPS, role="api") as client:
        runtime: Runtime = runtime_of(client)
        await runtime.emit_many([{"topic": "noop", "data": {}}] * 1200)
        now = time.time()
        params = _store.claim_params(
            steps=["Noop"], limit=1200, now=now, owner="t", token_prefix="t:", lease_seconds=60
        )
        async with write_transaction(runtime.engine) as conn:
            claimed = await _store.claim(conn, params)
            tokens = [c.lease_token for c in claimed[:1100]]
            done = await _store.ack(conn, [*tokens, "t:no-such-lease"], now)
        async with runtime.read_connection() as conn:
            statuses = dict(
                (
                    await conn.execute(
                        text("SELECT status, count(*) FROM stepwise_deliveries GROUP BY status")
                    )
                ).all()
            )
        if runtime.is_sqlite:
            plan = await _plan(
                runtime, _store._ACK_SQLITE_SQL, {"tokens": json.dumps(tokens[:2]), "now": now}
            )
            assert "ix_stepwise_deliveries_lease" in plan, plan
    assert len(claimed) == 1200
    assert done == {c.id for c in claimed[:1100]}
    assert statuses == {"done": 1100, "running": 100}


async def test_a_postgres_claim_that_finds_nothing_answers_the_idle_timers(
    tmp_path: Path, pg_url: str
) -> None:
    """`claim_or_due`: a claim that leases something answers no timers; one that leases
    nothing answers when the next pending delivery is due (a delayed one) and when the next
    lease ends (the first claim's), in the same statement."""
    async with step_app(tmp_path, pg_url, STEPS, role="api") as client:
        runtime: Runtime = runtime_of(client)
        await runtime.emit_many(
            [{"topic": "noop", "data": {}}, {"topic": "noop", "data": {}, "delay": 60}]
        )
        now = time.time()  # the claims' clock: the first delivery is due, the second in 60 s

        async def claim(owner: str) -> tuple[list[_store.Claimed], _store.Due | None]:
            params = _store.claim_params(
                steps=["Noop"], limit=5, now=now, owner=owner, token_prefix=f"{owner}:",
                lease_seconds=15,
            )  # fmt: skip
            async with one_statement(runtime.engine) as conn:
                return await _store.claim_or_due(conn, params, ["Noop"])

        first, no_timers = await claim("a")
        nothing, timers = await claim("b")
    assert len(first) == 1 and no_timers is None
    assert nothing == [] and timers is not None
    assert timers.pending is not None and now + 58 < timers.pending <= now + 60
    assert timers.lease == pytest.approx(now + 15)
