"""Cron steps: each firing is claimed once in the database, a missed one runs once at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import zoneinfo
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from croniter import croniter

from . import _store
from ._config import CronStepConfig
from ._logging import get_logger
from ._tracing import new_trace_id
from ._unit import notify_new_work

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._steps import Step


def next_fire(config: CronStepConfig, after: float) -> float:
    """The first firing strictly after `after` (epoch seconds), in the step's time zone."""
    tz = zoneinfo.ZoneInfo(config.timezone)
    start = datetime.fromtimestamp(after, tz)
    return float(croniter(config.schedule, start).get_next(datetime).timestamp())


def previous_fire(config: CronStepConfig, at: float) -> float:
    """The latest firing at or before `at`."""
    tz = zoneinfo.ZoneInfo(config.timezone)
    start = datetime.fromtimestamp(at + 0.000001, tz)
    return float(croniter(config.schedule, start).get_prev(datetime).timestamp())


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class CronScheduler:
    """Enqueues cron firings as deliveries; a unique key (step, fire time) makes each once-only."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.steps = runtime.registry.cron_steps
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(component="cron")

    async def start(self) -> None:
        if not self.steps:
            return
        self.runtime.clock.on_advance(self._wake.set)
        await self.catch_up()
        # Computed now, not when the task first runs: a firing due right after start is kept.
        after = self.runtime.clock.now()
        upcoming = {s.name: next_fire(s.config, after) for s in self.steps}  # type: ignore[arg-type]
        self._task = asyncio.create_task(self._loop(upcoming), name="stepwise-cron")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def catch_up(self) -> None:
        """For each cron step: if its latest due firing never ran (everything was down), run it
        once now. A step seen for the first time starts its schedule from now."""
        now = self.runtime.clock.now()
        for step in self.steps:
            config = step.config
            assert isinstance(config, CronStepConfig)
            due = previous_fire(config, now)
            async with self.runtime.read_connection() as conn:
                last = await _store.cron_last_fire(conn, step.name)
            if last is None:
                async with self.runtime.engine.begin() as conn:
                    await _store.mark_cron_baseline(conn, step.name, due)
            elif last < due:
                self._log.info("running a missed firing", step=step.name, fire_at=iso(due))
                await self.fire(step, due)

    async def fire(
        self, step: Step, fire_at: float, *, manual: bool = False, trace_id: str | None = None
    ) -> bool:
        """Enqueue a firing (its trace id `trace_id`, or a new one); False when another
        scheduler enqueued it first."""
        config = step.config
        assert isinstance(config, CronStepConfig)
        key = (
            f"cron:{step.name}:{fire_at:.0f}"
            if not manual
            else f"cron:{step.name}:manual:{new_trace_id()}"
        )
        async with self.runtime.engine.begin() as conn:
            inserted = await _store.insert_cron_firing(
                conn,
                step=step.name,
                fire_at=fire_at,
                dedupe_key=key,
                trace_id=trace_id or new_trace_id(),
                max_attempts=config.retry.max_attempts,
                now=self.runtime.clock.now(),
            )
            if inserted:
                await notify_new_work(conn)
        if inserted:
            self.runtime.notify_local()
        return inserted

    async def _loop(self, upcoming: dict[str, float]) -> None:
        clock = self.runtime.clock
        by_name = {s.name: s for s in self.steps}
        while True:
            now = clock.now()
            due = [name for name, at in upcoming.items() if at <= now]
            for name in due:
                step = by_name[name]
                try:
                    await self.fire(step, upcoming[name])
                except Exception as exc:
                    self._log.warning(
                        "could not enqueue a cron firing; retrying", step=name, error=str(exc)
                    )
                    await asyncio.sleep(1)
                    break
                upcoming[name] = next_fire(step.config, max(upcoming[name], now))  # type: ignore[arg-type]
            else:
                wait = min(upcoming.values()) - clock.now()
                self._wake.clear()
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives
                # just as the event is set (a manual clock jumping), and stop() then hangs.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(wait, 60.0))):
                        await self._wake.wait()
