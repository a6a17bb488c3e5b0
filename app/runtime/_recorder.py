"""Step runs for traces and metrics: kept in memory at once, written to the database in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

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


class Recorder:
    """Buffers step runs and flushes them every `interval` seconds (or at `max_buffer`)."""

    def __init__(self, engine: AsyncEngine, interval: float = 1.0, max_buffer: int = 5000) -> None:
        self.engine = engine
        self.interval = interval
        self.max_buffer = max_buffer
        self._buffer: deque[StepRun] = deque()
        self._listeners: list[RunListener] = []
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self.enabled = True
        self._log = get_logger(component="recorder")

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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            self._kick.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        rows: list[dict[str, Any]] = []
        while self._buffer and len(rows) < 10_000:
            rows.append(asdict(self._buffer.popleft()))
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(step_runs), rows)
        except Exception as exc:  # observability must never take the app down
            self._log.warning("could not store step runs", error=str(exc), dropped=len(rows))
