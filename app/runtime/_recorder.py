"""Step runs for traces and metrics: kept in memory at once, written to the database in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ._db import driver_transaction
from ._logging import get_logger
from ._schema import step_runs


@dataclass(slots=True)
class StepRun:
    trace_id: str
    step: str
    kind: str  # api | event | cron
    attempt: int
    started_at: float
    duration_ms: float
    outcome: str  # ok | error | timeout | lost | dead
    error: str | None = None
    detail: str | None = None
    delivery_id: int | None = None


RunListener = Callable[[StepRun], None]
_STOP_SECONDS = 10.0  # how long stop() lets a flush in progress finish
_CHUNK = 250  # rows per INSERT and transaction on SQLite: about 1 ms of the loop each


class Recorder:
    """Buffers step runs and flushes them every `interval` seconds (or at `max_buffer`)."""

    def __init__(self, engine: AsyncEngine, interval: float = 1.0, max_buffer: int = 50000) -> None:
        self.engine = engine
        self.interval = interval
        self.max_buffer = max_buffer
        self._buffer: deque[StepRun] = deque()
        self._listeners: list[RunListener] = []
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._stopping = False
        self.enabled = True
        self._log = get_logger(component="recorder")
        columns = self._columns = (
            "trace_id",
            "step",
            "kind",
            "delivery_id",
            "attempt",
            "started_at",
            "duration_ms",
            "outcome",
            "error",
            "detail",
        )
        # Constant table and column names; values always go through bound parameters.
        self._insert_sql = f"INSERT INTO {step_runs.name} ({', '.join(columns)}) VALUES "  # noqa: S608
        self._row_marks = f"({', '.join(['?'] * len(columns))})"  # SQLite's driver

    def add_listener(self, listener: RunListener) -> None:
        self._listeners.append(listener)

    def record(self, run: StepRun) -> None:
        for listener in self._listeners:
            listener(run)
        if not self.enabled:
            return
        self._buffer.append(run)
        if len(self._buffer) >= self.max_buffer:
            self._kick.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="stepwise-recorder")

    async def stop(self) -> None:
        """Flush what is buffered and stop. The loop is asked to finish, not cancelled: a flush
        cancelled half-way lost the runs it had taken, and on Postgres could leave the pooled
        connection in the middle of its COPY (CI saw the next flush fail with "another command
        is already in progress", then the shutdown hang)."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._kick.set()
            try:
                async with asyncio.timeout(_STOP_SECONDS):
                    await asyncio.shield(task)
            except TimeoutError:  # the database does not answer: give up on the flush
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._stopping = False
        while self._buffer:  # a flush takes at most 10,000 runs (a failed one drops them)
            await self.flush()

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._kick.wait()
            self._kick.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        rows: list[tuple[Any, ...]] = []
        buffer = self._buffer
        while buffer and len(rows) < 10_000:
            r = buffer.popleft()
            rows.append(
                (
                    r.trace_id,
                    r.step,
                    r.kind,
                    r.delivery_id,
                    r.attempt,
                    r.started_at,
                    r.duration_ms,
                    r.outcome,
                    r.error,
                    r.detail,
                )
            )
        try:
            if self.engine.dialect.name == "sqlite":
                # A transaction a chunk, each on the driver (no loop turn while it holds the
                # write lock) and a loop turn between them: a flush of thousands of runs never
                # keeps an emit waiting for the lock more than one chunk's few milliseconds.
                while rows:
                    chunk = rows[:_CHUNK]
                    async with driver_transaction(self.engine) as db:
                        db.execute(
                            self._insert_sql + ", ".join([self._row_marks] * len(chunk)),
                            tuple(value for row in chunk for value in row),
                        )
                    del rows[:_CHUNK]
                    await asyncio.sleep(0)
                return
            async with self.engine.begin() as conn:
                # Postgres: COPY, ~10 us a row, where a 10,000-parameter INSERT costs psycopg
                # ~70 us.
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                copy_sql = f"COPY {step_runs.name} ({', '.join(self._columns)}) FROM STDIN"
                async with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
                    for row in rows:
                        await copy.write_row(row)
        except Exception as exc:  # observability must never take the app down
            self._log.warning("could not store step runs", error=str(exc), dropped=len(rows))
