"""Cron steps: each firing runs once across schedulers; a missed one runs once at start-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from app.runtime import ManualClock, Runtime, discover
from app.runtime._config import CronStepConfig
from app.runtime._cron import next_fire, previous_fire
from app.runtime._db import create_engine
from app.runtime._schema import deliveries
from app.runtime._store import mark_cron_baseline
from tests.runtime.test_workers import producer, start_worker, state, workers
from tests.support import eventually, write_steps

CRON = {
    "tick_step.py": """
        config = {"name": "Tick", "type": "cron", "schedule": "* * * * *",
                  "emits": ["ticked"]}
        async def handler(_, ctx):
            n = await ctx.state.increment("cron", "ticks")
            await ctx.emit({"topic": "ticked", "data": {"n": n}})
            ctx.logger.info("tick", n=n)
    """,
    "after_tick_step.py": """
        config = {"name": "AfterTick", "type": "event", "subscribes": ["ticked"]}
        async def handler(event, ctx):
            await ctx.state.set("cron", f"after-{event.data['n']}", event.trace_id)
    """,
}

T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC).timestamp()  # half a minute past 12:00


def test_schedules_honour_the_time_zone() -> None:
    paris = CronStepConfig(name="P", type="cron", schedule="0 9 * * *", timezone="Europe/Paris")
    utc = CronStepConfig(name="U", type="cron", schedule="0 9 * * *")
    assert datetime.fromtimestamp(next_fire(paris, T0), UTC).hour == 8  # 09:00 CET
    assert datetime.fromtimestamp(next_fire(utc, T0), UTC).hour == 9
    assert previous_fire(utc, next_fire(utc, T0)) == next_fire(utc, T0)


async def firings(runtime: Runtime) -> int:
    async with runtime.read_connection() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).select_from(deliveries).where(deliveries.c.step == "Tick")
                )
            ).scalar_one()
        )


async def test_three_schedulers_one_firing_per_tick(tmp_path: Path, any_db_url: str) -> None:
    steps = write_steps(tmp_path, CRON)
    clock = ManualClock(start=T0)
    engines = [create_engine(any_db_url, sqlite_synchronous="NORMAL") for _ in range(3)]
    runtimes = [Runtime(discover(steps), e, clock=clock) for e in engines]
    try:
        # one of them also runs the worker; all three schedule
        await runtimes[0].start(worker=True, scheduler=True)
        for runtime in runtimes[1:]:
            await runtime.start(worker=False, scheduler=True)
        assert await firings(runtimes[0]) == 0  # a first start fires nothing
        for minute in range(1, 4):
            clock.set(T0 + 60 * minute)
            await eventually(lambda m=minute: _eq(state(runtimes[0], "cron", "ticks"), m))
        await eventually(lambda: _eq(state(runtimes[0], "cron", "after-3"), None, negate=True))
        count = await firings(runtimes[0])
        chain = await state(runtimes[0], "cron")
    finally:
        for runtime in runtimes:
            await runtime.stop()
        for engine in engines:
            await engine.dispose()
    assert count == 3
    assert chain["ticks"] == 3
    assert {chain["after-1"], chain["after-2"], chain["after-3"]} != {None}  # cron ctx emits


async def test_a_missed_firing_runs_once_at_start_up_across_three_workers(
    tmp_path: Path, any_db_url: str
) -> None:
    # A yearly schedule: the workers' own clock cannot reach a regular firing during the test.
    yearly = {
        "tick_step.py": CRON["tick_step.py"].replace("* * * * *", "0 0 1 1 *"),
        "after_tick_step.py": CRON["after_tick_step.py"],
    }
    steps = write_steps(tmp_path, yearly)
    async with producer(any_db_url, steps) as runtime:
        # everything was down for three years: three firings were missed; one runs
        async with runtime.engine.begin() as conn:
            await mark_cron_baseline(conn, "Tick", runtime.clock.now() - 3 * 366 * 86400)
        with workers(any_db_url, steps) as procs:
            for _ in range(3):
                start_worker(procs, any_db_url, steps)
            await eventually(lambda: _eq(state(runtime, "cron", "ticks"), 1), timeout=60)
            await asyncio.sleep(1.0)  # the other two schedulers have had their chance
            ticks = await state(runtime, "cron", "ticks")
            count = await firings(runtime)
    assert ticks == 1
    assert count == 1


async def test_fire_now_runs_a_cron_step_outside_its_schedule(tmp_path: Path, db_url: str) -> None:
    steps = write_steps(tmp_path, CRON)
    clock = ManualClock(start=T0)
    runtime = Runtime(discover(steps), create_engine(db_url), clock=clock)
    await runtime.start(worker=True)
    try:
        await runtime.fire_cron("Tick")
        await runtime.fire_cron("Tick")
        await eventually(lambda: _eq(state(runtime, "cron", "ticks"), 2))
    finally:
        await runtime.stop()
        await runtime.engine.dispose()


async def test_stopping_the_scheduler_just_as_a_manual_clock_jumps_does_not_hang(
    tmp_path: Path, db_url: str
) -> None:
    steps = write_steps(tmp_path, CRON)
    engine = create_engine(db_url)
    try:
        # The stop lands at a different point of the wake-up each time.
        for spins in range(4):
            clock = ManualClock(start=T0)
            runtime = Runtime(discover(steps), engine, clock=clock)
            await runtime.start(worker=False, scheduler=True)
            assert runtime.scheduler is not None
            await asyncio.sleep(0.05)  # the scheduler is waiting for its next firing
            clock.advance(1)  # wakes it (nothing is due yet)
            for _ in range(spins):
                await asyncio.sleep(0)
            loop_task = runtime.scheduler._task
            assert loop_task is not None
            stopping = asyncio.ensure_future(runtime.scheduler.stop())
            stopped, _ = await asyncio.wait({stopping}, timeout=5)
            loop_task.cancel()  # a failure leaves nothing running
            await stopping
            await runtime.stop()
            assert stopped, f"the scheduler ignored stop() ({spins} turns after the jump)"
    finally:
        await engine.dispose()


async def _eq(awaitable: Any, expected: Any, negate: bool = False) -> bool:
    value = await awaitable
    return (value != expected) if negate else (value == expected)
