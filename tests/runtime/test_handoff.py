"""SQLite: an emit hands its new deliveries straight to its own process's idle worker, leased in
the emit's transaction (no wake-up, no claim); what a claim could not take at once goes the usual
way, a failed emit gives the room back, and a kill loses nothing."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.runtime import Runtime
from app.runtime._db import create_engine
from app.runtime._schema import deliveries
from app.runtime._unit import Unit
from tests.conftest import sqlite_copy
from tests.runtime.conftest import step_app
from tests.runtime.live import server_process, wait_ready
from tests.support import eventually, write_steps

STEPS = {
    "start_step.py": """
        config = {"name": "Start", "type": "api", "path": "/emit/{kind}", "method": "POST",
                  "auth": "public", "emits": ["job.free", "job.limited", "job.grouped"]}
        async def handler(req, ctx):
            kind = req.params["kind"]
            emit = {"topic": f"job.{kind}", "data": {"n": req.query.get("n", "1")}}
            if kind == "grouped":
                emit["message_group_id"] = "g1"
            return {"status": 202, "body": {"event_id": await ctx.emit(emit)}}
    """,
    "free_step.py": """
        config = {"name": "Free", "type": "event", "subscribes": ["job.free"], "emits": ["job.free"]}
        async def handler(event, ctx):
            await ctx.state.set("done", event.id, {"step": "Free", "attempt": ctx.attempt})
            if event.data["n"] == "chain":  # a handler's emit is handed over too
                await ctx.emit({"topic": "job.free", "data": {"n": "end"}})
    """,
    "limited_step.py": """
        config = {"name": "Limited", "type": "event", "subscribes": ["job.limited"],
                  "concurrency": 1}
        async def handler(event, ctx):
            await ctx.state.set("done", event.id, {"step": "Limited", "attempt": ctx.attempt})
    """,
    "grouped_step.py": """
        config = {"name": "Grouped", "type": "event", "subscribes": ["job.grouped"]}
        async def handler(event, ctx):
            await ctx.state.set("done", event.id, {"step": "Grouped", "attempt": ctx.attempt})
    """,
}


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    return sqlite_copy(_sqlite_template, tmp_path)


async def done(runtime: Runtime) -> dict[str, Any]:
    return await Unit(runtime.engine, runtime.clock.now).get_group("done")


async def test_an_idle_workers_own_emits_are_handed_over_and_the_rest_claimed(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with step_app(tmp_path, sqlite_url, STEPS) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        worker = runtime.worker
        assert worker is not None
        await eventually(lambda: _async(worker._waiting))  # idle: nothing left to claim
        first = (await client.post("/emit/free")).json()["event_id"]
        await eventually(lambda: _has(runtime, first))
        assert worker.handed_over == 1
        # A step with a concurrency limit and an event of a message group are left to a claim
        # (it checks the limit across workers and the group's order)...
        limited = (await client.post("/emit/limited")).json()["event_id"]
        grouped = (await client.post("/emit/grouped")).json()["event_id"]
        await eventually(lambda: _has(runtime, limited, grouped))
        assert worker.handed_over == 1
        # ...and a handler's emit, committed with its ack, is handed over like an API step's.
        await eventually(lambda: _async(worker._waiting))
        await client.post("/emit/free", params={"n": "chain"})
        await eventually(lambda: _count(runtime, 4 + 1))
        assert worker.handed_over == 3
        results = await done(runtime)
    assert sorted(r["step"] for r in results.values()) == [
        "Free",
        "Free",
        "Free",
        "Grouped",
        "Limited",
    ]
    assert {r["attempt"] for r in results.values()} == {1}


async def test_an_emit_that_fails_after_the_handover_gives_the_room_back(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with step_app(tmp_path, sqlite_url, STEPS, worker_concurrency=1) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        worker = runtime.worker
        assert worker is not None
        await eventually(lambda: _async(worker._waiting))
        # The deliveries' INSERT, after the worker took them, fails in the database itself (a
        # trigger, as SQLite fails a write on a full disk): the emit fails.
        with _sqlite(sqlite_url) as db:
            db.execute(
                "CREATE TRIGGER full_disk BEFORE INSERT ON stepwise_deliveries "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        failed = await client.post("/emit/free")
        with _sqlite(sqlite_url) as db:
            db.execute("DROP TRIGGER full_disk")
        assert failed.status_code == 507  # the error envelope: storage full, not a 500
        assert failed.json()["code"] == "insufficient_storage"
        assert worker.handed_over == 0
        # With one slot, a slot kept by the failed emit would stall the worker for good.
        await eventually(lambda: _async(worker._waiting))
        event_id = (await client.post("/emit/free")).json()["event_id"]
        await eventually(lambda: _has(runtime, event_id))
        assert worker.handed_over == 1
        assert len(await done(runtime)) == 1  # the failed emit left nothing behind


@pytest.mark.slow
async def test_a_handed_over_delivery_survives_a_kill_of_its_process(
    tmp_path: Path, sqlite_url: str
) -> None:
    steps = write_steps(
        tmp_path,
        {
            "start_step.py": STEPS["start_step.py"].replace("job.free", "job.hang"),
            "hang_step.py": """
                import asyncio, os
                config = {"name": "Hang", "type": "event", "subscribes": ["job.hang"]}
                async def handler(event, ctx):
                    marker = os.path.join(os.environ["MARKER_DIR"], f"started-{ctx.attempt}")
                    open(marker, "w").close()
                    if os.environ.get("HANG") == "1":
                        await asyncio.sleep(600)
                    await ctx.state.set("done", event.id, {"attempt": ctx.attempt})
            """,
        },
    )
    env = {"MARKER_DIR": str(tmp_path), "SQLITE_SYNCHRONOUS": "NORMAL"}
    with server_process(sqlite_url, steps, HANG="1", **env) as victim:
        await wait_ready(victim)
        async with victim.client() as http:
            event_id = (await http.post("/emit/hang")).json()["event_id"]
        await eventually(lambda: _async((tmp_path / "started-1").exists()), timeout=30)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
    # The delivery was leased to the dead process: the next one on this host takes it at start.
    with server_process(sqlite_url, steps, **env) as restarted:
        await wait_ready(restarted)
        engine = create_engine(sqlite_url)
        try:
            result = await eventually(
                lambda: Unit(engine, time.time).get("done", event_id), timeout=10
            )
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(deliveries.c.attempts, deliveries.c.interruptions).where(
                            deliveries.c.event_id == event_id
                        )
                    )
                ).one()
        finally:
            await engine.dispose()
    # The killed run had no outcome: the same attempt ran again, counted as one interruption.
    assert result == {"attempt": 1}
    assert tuple(row) == (1, 1)


@contextlib.contextmanager
def _sqlite(url: str) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        yield db
    finally:
        db.close()


BURST_STEPS = {
    "burst_step.py": """
        import asyncio
        RUNNING = 0
        PEAK = 0
        STARTED = []
        config = {"name": "Burst", "type": "event", "subscribes": ["job.burst"]}
        async def handler(event, ctx):
            global RUNNING, PEAK
            RUNNING += 1
            PEAK = max(PEAK, RUNNING)
            STARTED.append(event.data["n"])
            try:
                await asyncio.sleep(0.02)
                await ctx.state.set("done", event.id, event.data["n"])
            finally:
                RUNNING -= 1
    """,
}


async def test_a_burst_beyond_the_concurrency_limit_is_prefetched_in_order(
    tmp_path: Path, sqlite_url: str
) -> None:
    """An idle worker takes up to twice its concurrency from its process's emit: the overflow
    waits in the worker, in order, for a free slot (no claim, no second transaction), never
    more than `concurrency` handlers run at once, and what is beyond that goes to a claim."""
    async with step_app(tmp_path, sqlite_url, BURST_STEPS, worker_concurrency=2) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        worker = runtime.worker
        assert worker is not None
        await eventually(lambda: _async(worker._waiting))
        await runtime.emit_many([{"topic": "job.burst", "data": {"n": n}} for n in range(5)])
        assert worker.handed_over == 4  # concurrency 2 + prefetch 2; the fifth is claimed
        await eventually(lambda: _count(runtime, 5))
        module = runtime.registry.by_name["Burst"].handler.fn.__globals__  # type: ignore[union-attr]
        assert module["PEAK"] == 2
        assert module["STARTED"] == [0, 1, 2, 3, 4]
        assert sorted((await done(runtime)).values()) == [0, 1, 2, 3, 4]


async def _async(value: Any) -> Any:
    return value


async def _has(runtime: Runtime, *event_ids: str) -> bool:
    results = await done(runtime)
    return all(e in results for e in event_ids)


async def _count(runtime: Runtime, n: int) -> bool:
    return len(await done(runtime)) >= n
