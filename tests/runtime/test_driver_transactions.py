"""SQLite: emits, and the commits of steps and of the worker's groups, write on SQLite's driver,
on a connection the engine keeps for them outside its pool. Whatever happens to one (its INSERT
fails, it is cancelled while waiting for the write lock, a second comes while the first waits,
the engine is disposed, the delivery's lease was lost), the connection is left with no
transaction open, nothing half-written is kept, and the next one goes through."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.runtime import Runtime
from app.runtime._db import create_engine
from app.runtime._schema import deliveries, events
from app.runtime._unit import Unit
from tests.conftest import sqlite_copy
from tests.support import eventually, write_steps

STEPS = {
    "sink_step.py": """
        config = {"name": "Sink", "type": "event", "subscribes": ["job.new"]}
        async def handler(event, ctx):
            pass
    """,
    "slow_step.py": """
        import asyncio, pathlib
        config = {"name": "Slow", "type": "event", "subscribes": ["job.slow"],
                  "emits": ["job.after"]}
        async def handler(event, ctx):
            await ctx.state.set("seen", event.id, ctx.attempt)
            await ctx.emit({"topic": "job.after", "data": {}})
            while not pathlib.Path(event.data["gate"]).exists():
                await asyncio.sleep(0.005)
    """,
}


@pytest.fixture
async def runtime(tmp_path: Path, _sqlite_template: Path) -> AsyncIterator[Runtime]:
    url = sqlite_copy(_sqlite_template, tmp_path)
    engine = create_engine(url)
    yield Runtime.from_folder(write_steps(tmp_path, STEPS), engine)  # no worker: rows stay
    await engine.dispose()


def _path(runtime: Runtime) -> str:
    return str(runtime.engine.url.database)


async def _counts(runtime: Runtime) -> tuple[int, int]:
    async with runtime.read_connection() as conn:
        n_events = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
        n_deliveries = (
            await conn.execute(select(func.count()).select_from(deliveries))
        ).scalar_one()
    return int(n_events), int(n_deliveries)


@contextlib.contextmanager
def _write_lock_held_elsewhere(runtime: Runtime) -> sqlite3.Connection:  # type: ignore[misc]
    other = sqlite3.connect(_path(runtime), isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


def _lock_is_free(runtime: Runtime) -> bool:
    probe = sqlite3.connect(_path(runtime), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


async def test_an_emit_whose_insert_fails_keeps_nothing_and_the_next_goes_through(
    runtime: Runtime,
) -> None:
    # A real failure half-way through the emit's transaction: its event row is written, then
    # the delivery's INSERT is refused by the database.
    db = sqlite3.connect(_path(runtime), isolation_level=None)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON stepwise_deliveries "
        "WHEN json_extract(NEW.data, '$.n') = 13 BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    db.close()
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        await runtime.emit("job.new", {"n": 13})
    assert await _counts(runtime) == (0, 0)  # not the event without its delivery
    assert _lock_is_free(runtime)
    await runtime.emit("job.new", {"n": 1})
    assert await _counts(runtime) == (1, 1)


async def test_an_emit_cancelled_while_waiting_for_the_lock_leaves_nothing_behind(
    runtime: Runtime,
) -> None:
    await runtime.emit("job.new", {"n": 0})  # the engine's emit connection is open now
    with _write_lock_held_elsewhere(runtime):
        waiting = asyncio.create_task(runtime.emit("job.new", {"n": 1}))
        for _ in range(5):
            await asyncio.sleep(0.002)
        assert not waiting.done()  # it waits for the lock, without blocking the loop
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    assert _lock_is_free(runtime)
    await asyncio.wait_for(runtime.emit("job.new", {"n": 2}), timeout=2)
    assert await _counts(runtime) == (2, 2)  # the cancelled one was never written


async def test_emits_waiting_together_for_the_lock_all_land(runtime: Runtime) -> None:
    with _write_lock_held_elsewhere(runtime) as other:
        # The first takes the engine's emit connection, the others find it in use and wait on
        # pooled connections: once the lock is free, every one of them commits.
        waiting = [asyncio.create_task(runtime.emit("job.new", {"n": n})) for n in range(5)]
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in waiting)
        other.execute("ROLLBACK")
        ids = await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    assert len(set(ids)) == 5
    assert await _counts(runtime) == (5, 5)
    assert _lock_is_free(runtime)


async def test_disposing_the_engine_closes_the_emit_connection_and_emits_go_on(
    runtime: Runtime,
) -> None:
    await runtime.emit("job.new", {"n": 1})
    await runtime.engine.dispose()
    # Closed with the pool: the database file can be checkpointed and removed by its owner.
    with sqlite3.connect(_path(runtime)) as probe:
        busy, _log, _done = probe.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    await runtime.emit("job.new", {"n": 2})  # opened again, as the pool's connections are
    assert await _counts(runtime) == (2, 2)


async def test_a_delivery_whose_lease_was_lost_commits_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The worker's group commit on the driver: the ack finds the lease gone (another worker
    took the delivery over), so the handler's state write and emit are dropped with it."""
    await runtime.start(worker=True, scheduler=False)
    worker = runtime.worker
    assert worker is not None
    try:
        gate = tmp_path / "gate"
        await runtime.emit("job.slow", {"gate": str(gate)})

        async def running() -> int:
            return len(worker._tasks)

        await eventually(running)
        # What a rescue after an expired lease does: the delivery now belongs to someone else.
        db = sqlite3.connect(_path(runtime), isolation_level=None)
        db.execute(
            "UPDATE stepwise_deliveries SET lease_token = 'elsewhere', lease_owner = 'other' "
            "WHERE step = 'Slow'"
        )
        db.close()
        processed = worker.processed
        gate.touch()

        async def finished() -> bool:
            return worker.processed > processed

        await eventually(finished)
        assert await Unit(runtime.engine, runtime.clock.now).get_group("seen") == {}
        assert await _counts(runtime) == (1, 1)  # no job.after: the emit went with the ack
        async with runtime.read_connection() as conn:
            row = (await conn.execute(select(deliveries.c.status, deliveries.c.lease_token))).one()
        assert tuple(row) == ("running", "elsewhere")  # left to the worker that holds it
        assert _lock_is_free(runtime)
        # The engine's connection goes on: a delivery of another step runs and commits.
        await runtime.emit("job.new", {"n": 1})

        async def all_done() -> bool:
            async with runtime.read_connection() as conn:
                statuses = (await conn.execute(select(deliveries.c.status))).scalars().all()
            return sorted(statuses) == ["done", "running"]

        await eventually(all_done)
    finally:
        await runtime.stop()


async def test_an_emit_cancelled_at_any_point_never_strands_what_it_committed(
    runtime: Runtime,
) -> None:
    """An idle worker takes its own process's emits in their transaction: a cancel anywhere in
    the emit (before BEGIN, or once the commit is done) leaves nothing leased to it that it
    does not run at once, so every committed event is handled well before a lease (15 s) could
    expire."""
    await runtime.start(worker=True, scheduler=False)
    worker = runtime.worker
    assert worker is not None
    try:
        for turns in range(4):

            async def idle() -> bool:
                return worker._waiting

            await eventually(idle)  # each emit may be handed over
            task = asyncio.create_task(runtime.emit("job.new", {"n": turns}))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        async def all_done() -> bool:
            async with runtime.read_connection() as conn:
                statuses = (await conn.execute(select(deliveries.c.status))).scalars().all()
            return bool(statuses) and set(statuses) == {"done"}

        await eventually(all_done, timeout=5)
        assert worker.handed_over >= 1  # the emits did go the handed-over way
        assert _lock_is_free(runtime)
    finally:
        await runtime.stop()
