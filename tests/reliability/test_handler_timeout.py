"""Handlers that hang past their `retry.timeout` in a real worker process: each hung attempt is
cancelled and retried, and ends done or dead-lettered, while the other deliveries keep flowing
through the slots the hung ones leave."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from app.runtime import Runtime, discover
from app.runtime._db import create_engine
from app.runtime._unit import Unit
from tests.reliability.conftest import FaultRecord
from tests.reliability.harness import Cluster
from tests.reliability.verify import _rows, wait_drained
from tests.support import eventually, write_steps

pytestmark = pytest.mark.slow

TIMEOUT = 1.0

STEPS = {
    "hang_step.py": f"""
        import asyncio
        config = {{"name": "Hang", "type": "event", "subscribes": ["hang"],
                  "retry": {{"max_attempts": 3, "delay": 0.05, "timeout": {TIMEOUT}}}}}
        async def handler(event, ctx):
            if ctx.attempt <= event.data["hung_attempts"]:
                await asyncio.sleep(3600)  # never returns: only the timeout ends it
            await ctx.state.set("hang", event.id, ctx.attempt)
    """,
    "hang_sync_step.py": f"""
        import os, time
        config = {{"name": "HangSync", "type": "event", "subscribes": ["hang.sync"],
                  "retry": {{"max_attempts": 3, "delay": 0.05, "timeout": {TIMEOUT}}}}}
        def handler(event, ctx):
            # A thread cannot be cancelled: the hung attempt wakes up later and tries to write.
            if ctx.attempt == 1:
                time.sleep({TIMEOUT} * 3)
            try:
                ctx.state.set("hang", event.id, ctx.attempt)
            finally:
                open(os.path.join(os.environ["MARKER_DIR"], f"woke-{{ctx.attempt}}"), "w").close()
    """,
    "tick_step.py": """
        config = {"name": "Tick", "type": "event", "subscribes": ["tick"]}
        async def handler(event, ctx):
            await ctx.state.set("ticks", event.id, True)
    """,
}


@asynccontextmanager
async def producer(url: str, steps: Path) -> AsyncIterator[Runtime]:
    engine = create_engine(url, sqlite_synchronous="NORMAL")
    try:
        yield Runtime(discover(steps), engine)
    finally:
        await engine.dispose()


async def group(runtime: Runtime, name: str) -> dict[str, Any]:
    return await Unit(runtime.engine, runtime.clock.now).get_group(name)


async def running(db_url: str, steps: tuple[str, ...]) -> int:
    rows = await asyncio.to_thread(
        _rows,
        db_url,
        "SELECT step FROM stepwise_deliveries WHERE status = 'running'",
    )
    return sum(1 for (step,) in rows if step in steps)


async def test_hung_handlers_are_cancelled_retried_and_end_done_or_dead_while_others_flow(
    db_url: str, tmp_path: Path, clusters: Callable[..., Cluster], faults: FaultRecord
) -> None:
    steps = write_steps(tmp_path, STEPS)
    cluster = clusters(db_url, STEPS_DIR=str(steps), MARKER_DIR=str(tmp_path))
    worker = cluster.worker(WORKER_CONCURRENCY="8")
    async with producer(db_url, steps) as runtime:
        once = [await runtime.emit("hang", {"hung_attempts": 1}) for _ in range(2)]
        twice = await runtime.emit("hang", {"hung_attempts": 2})
        doomed = [await runtime.emit("hang", {"hung_attempts": 3}) for _ in range(4)]
        thread = await runtime.emit("hang.sync", {})
        # Seven of the eight slots hang; the ticks go through what is left.
        await eventually(lambda: _at_least(running(db_url, ("Hang", "HangSync")), 7), timeout=90)
        ticks = await runtime.emit_many([{"topic": "tick", "data": {"n": n}} for n in range(200)])
        await eventually(lambda: _length(group(runtime, "ticks"), 200), timeout=60)
        ticks_done_at = max(
            r[0]
            for r in await asyncio.to_thread(
                _rows, db_url, "SELECT finished_at FROM stepwise_deliveries WHERE step = 'Tick'"
            )
        )
        await wait_drained(db_url, timeout=60)
        # The hung thread woke up after its attempt was abandoned; its late write was discarded.
        await eventually(lambda: _true((tmp_path / "woke-1").exists()), timeout=30)
        hang = await group(runtime, "hang")
        dead = await runtime.dead_letters()
    assert set(ticks) <= set(await _tick_ids(db_url))
    assert {k: hang[k] for k in once} == dict.fromkeys(once, 2)
    assert hang[twice] == 3
    assert hang[thread] == 2  # attempt 1's write, made after its timeout, never landed
    assert sorted(d["event_id"] for d in dead) == sorted(doomed)
    for letter in dead:
        errors = (
            letter["errors"] if isinstance(letter["errors"], list) else json.loads(letter["errors"])
        )
        assert [e["attempt"] for e in errors] == [1, 2, 3], errors
        assert all("timed out after" in e["error"] for e in errors), errors
    dead_at = min(
        r[0]
        for r in await asyncio.to_thread(
            _rows, db_url, "SELECT finished_at FROM stepwise_deliveries WHERE status = 'dead'"
        )
    )
    # The ticks did not wait for the hung handlers to give up.
    assert ticks_done_at < dead_at
    assert worker.alive()
    faults.add("handlers hung past their timeout")


async def _tick_ids(db_url: str) -> list[str]:
    rows = await asyncio.to_thread(
        _rows,
        db_url,
        "SELECT event_id FROM stepwise_deliveries WHERE step = 'Tick' AND status = 'done'",
    )
    return [r[0] for r in rows]


async def _at_least(awaitable: Any, n: int) -> bool:
    return bool(await awaitable >= n)


async def _length(awaitable: Any, n: int) -> bool:
    return len(await awaitable) == n


async def _true(value: bool) -> bool:
    return value
