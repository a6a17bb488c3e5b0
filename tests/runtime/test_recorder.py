"""The step-run recorder: stopping while a flush is under way loses no run."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from app.runtime._db import create_engine
from app.runtime._recorder import Recorder, StepRun
from app.runtime._schema import step_runs


async def test_stopping_during_a_flush_finishes_it_and_stores_every_run(any_db_url: str) -> None:
    engine = create_engine(any_db_url)
    try:
        recorder = Recorder(engine, interval=60, max_buffer=20_000)
        recorder.start()
        await asyncio.sleep(0)  # the loop is waiting for its interval or a kick
        for n in range(25_000):  # the 20,000th run kicks a flush of the first 10,000
            recorder.record(StepRun(f"trace-{n}", "Step", "event", 1, 0.0, 1.0, "ok"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # ...which is now under way, between its statements
        await recorder.stop()
        async with engine.connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(step_runs))).scalar()
    finally:
        await engine.dispose()
    assert stored == 25_000
