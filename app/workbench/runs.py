"""Step runs seen by this process: the newest ones (for live traces) and counters (Prometheus)."""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from app.runtime import get_logger
from app.runtime._recorder import StepRun

# Prometheus histogram buckets for step durations, in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ERROR_OUTCOMES = frozenset({"error", "timeout", "dead"})


def safe_listener(listener: Callable[[StepRun], None]) -> Callable[[StepRun], None]:
    """Observability must never fail a step: a broken listener is logged, not raised."""
    log = get_logger(component="workbench")

    def call(run: StepRun) -> None:
        try:
            listener(run)
        except Exception as exc:
            log.warning("a step-run listener failed", error=f"{type(exc).__name__}: {exc}")

    return call


_FIELDS = (
    "trace_id",
    "step",
    "kind",
    "attempt",
    "started_at",
    "duration_ms",
    "outcome",
    "error",
    "detail",
    "delivery_id",
)


def run_key(run: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one run across the memory ring and the table."""
    return (run["step"], run["delivery_id"], run["attempt"], round(float(run["started_at"]), 3))


class RecentRuns:
    """The newest runs of this process, so a trace shows them before the recorder's flush.

    Kept as tuples of plain values: the garbage collector does not track them.
    """

    def __init__(self, capacity: int = 5000) -> None:
        self.runs: deque[tuple[Any, ...]] = deque(maxlen=capacity)

    def __call__(self, run: StepRun) -> None:
        self.runs.append(
            (
                run.trace_id,
                run.step,
                run.kind,
                run.attempt,
                run.started_at,
                run.duration_ms,
                run.outcome,
                run.error,
                run.detail,
                run.delivery_id,
            )
        )

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [dict(zip(_FIELDS, r, strict=True)) for r in list(self.runs) if r[0] == trace_id]

    def since(self, started_after: float) -> list[dict[str, Any]]:
        return [
            dict(zip(_FIELDS, r, strict=True)) for r in list(self.runs) if r[4] >= started_after
        ]


class _StepCounters:
    __slots__ = ("buckets", "count", "duration_sum", "outcomes", "retries")

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], int] = {}
        self.retries = 0
        self.count = 0
        self.duration_sum = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


class RunCounters:
    """Monotonic per-step counters and duration histograms of the runs this process executed."""

    def __init__(self) -> None:
        self.steps: dict[str, _StepCounters] = {}
        self._lock = threading.Lock()

    def __call__(self, run: StepRun) -> None:
        seconds = run.duration_ms / 1000.0
        with self._lock:
            counters = self.steps.get(run.step)
            if counters is None:
                counters = self.steps[run.step] = _StepCounters()
            key = (run.kind, run.outcome)
            counters.outcomes[key] = counters.outcomes.get(key, 0) + 1
            if run.attempt > 1:
                counters.retries += 1
            counters.count += 1
            counters.duration_sum += seconds
            counters.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                step: {
                    "outcomes": dict(c.outcomes),
                    "retries": c.retries,
                    "count": c.count,
                    "duration_sum": c.duration_sum,
                    "buckets": list(c.buckets),
                }
                for step, c in self.steps.items()
            }
