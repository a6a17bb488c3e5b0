"""The worker's group commit when handlers only write state (on Postgres, one statement that
acks and writes): each delivery's writes land only with its own ack, in the order the handler
made them, and a delivery whose lease was lost leaves nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.runtime import Runtime
from app.runtime._db import create_engine
from app.runtime._schema import deliveries
from app.runtime._unit import Unit
from tests.support import eventually, write_steps

STEPS = {
    "twice_step.py": """
        config = {"name": "Twice", "type": "event", "subscribes": ["job.twice"]}
        async def handler(event, ctx):
            n = event.data["n"]
            await ctx.state.set("twice", str(n), {"n": n, "write": 1})
            await ctx.state.set("twice", str(n), {"n": n, "write": 2})
            await ctx.state.set("count", str(n % 3), n)
    """,
    "slow_step.py": """
        import asyncio, pathlib
        config = {"name": "Slow", "type": "event", "subscribes": ["job.slow"]}
        async def handler(event, ctx):
            await ctx.state.set("slow", event.id, ctx.attempt)
            while not pathlib.Path(event.data["gate"]).exists():
                await asyncio.sleep(0.005)
    """,
}


@pytest.fixture
async def runtime(tmp_path: Path, any_db_url: str) -> AsyncIterator[Runtime]:
    engine = create_engine(any_db_url)
    runtime = Runtime.from_folder(write_steps(tmp_path, STEPS), engine)
    await runtime.start(worker=True, scheduler=False)
    try:
        yield runtime
    finally:
        await runtime.stop()
        await engine.dispose()


async def _statuses(runtime: Runtime) -> list[str]:
    async with runtime.read_connection() as conn:
        return sorted((await conn.execute(select(deliveries.c.status))).scalars().all())


async def test_a_groups_state_writes_land_with_their_acks_in_the_handlers_order(
    runtime: Runtime,
) -> None:
    """300 deliveries committed in groups: every key holds the handler's last write, and a key
    written by several deliveries holds one of theirs."""
    await runtime.emit_many([{"topic": "job.twice", "data": {"n": n}} for n in range(300)])

    async def all_done() -> bool:
        return await _statuses(runtime) == ["done"] * 300

    await eventually(all_done, timeout=30)
    unit = Unit(runtime.engine, runtime.clock.now)
    twice = await unit.get_group("twice")
    assert twice == {str(n): {"n": n, "write": 2} for n in range(300)}
    count = await unit.get_group("count")
    assert sorted(count) == ["0", "1", "2"]
    assert all(value % 3 == int(key) for key, value in count.items())


async def test_a_delivery_whose_lease_was_lost_writes_no_state(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Two deliveries finish together (one gate), one of them after its lease was lost (another
    worker took it over): that one's state write is dropped with its ack, the other's lands,
    and the lost one stays with the worker that holds it."""
    worker = runtime.worker
    assert worker is not None
    gate = tmp_path / "gate"
    kept, lost = await runtime.emit_many(
        [{"topic": "job.slow", "data": {"gate": str(gate)}} for _ in range(2)]
    )

    async def running() -> bool:
        return len(worker._tasks) == 2

    await eventually(running)
    # What a rescue after an expired lease does: the delivery now belongs to someone else.
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.event_id == lost)
            .values(lease_token="elsewhere", lease_owner="other")
        )
    processed = worker.processed
    gate.touch()

    async def finished() -> bool:
        return worker.processed >= processed + 2

    await eventually(finished)
    assert await Unit(runtime.engine, runtime.clock.now).get_group("slow") == {kept: 1}
    async with runtime.read_connection() as conn:
        rows = (
            await conn.execute(
                select(deliveries.c.event_id, deliveries.c.status, deliveries.c.lease_token)
            )
        ).all()
    assert sorted(tuple(r) for r in rows) == sorted(
        [(kept, "done", None), (lost, "running", "elsewhere")]
    )
