"""The step-run recorder: stopping while a flush is under way loses no run; a chunk the
database refuses loses no other flush's runs."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.runtime._db import create_engine
from app.runtime._recorder import _CHUNK, Recorder, StepRun
from app.runtime._schema import step_runs
from tests.conftest import sqlite_copy


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


async def test_a_failing_chunk_on_sqlite_keeps_the_chunks_before_it_and_the_recorder_goes_on(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    """On SQLite each chunk of a flush is a transaction of its own (no loop turn while it
    holds the write lock): one the database refuses drops itself and what follows it in that
    flush, never what was stored before it, and the next flush stores again."""
    url = sqlite_copy(_sqlite_template, tmp_path)
    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON stepwise_runs WHEN NEW.trace_id = 'trace-1500' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    db.close()
    engine = create_engine(url)
    try:
        recorder = Recorder(engine, interval=60)
        for n in range(3_000):
            recorder.record(StepRun(f"trace-{n}", "Step", "event", 1, 0.0, 1.0, "ok"))
        await recorder.flush()
        kept = 1_500 // _CHUNK * _CHUNK  # the chunks before the refused one
        assert 0 < kept < 3_000
        assert await _stored(engine) == kept
        for n in range(10):
            recorder.record(StepRun(f"later-{n}", "Step", "event", 1, 0.0, 1.0, "ok"))
        await recorder.flush()
        assert await _stored(engine) == kept + 10
    finally:
        await engine.dispose()


async def _stored(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(step_runs))).scalar_one())
