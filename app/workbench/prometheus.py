"""`GET /metrics` in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

from typing import Any

from .runs import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _num(value: float | None) -> str:
    if value is None:
        return "NaN"
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(counters: dict[str, dict[str, Any]], window: dict[str, Any]) -> str:
    """`counters`: this process's monotonic per-step counters; `window`: the database-wide
    view of the last `window_seconds` (every instance's runs) and the queue."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("stepwise_step_runs_total", "counter", "Step runs executed by this process.")
    for step, c in sorted(counters.items()):
        for (kind, outcome), n in sorted(c["outcomes"].items()):
            out.append(
                f"stepwise_step_runs_total{_labels(step=step, kind=kind, outcome=outcome)} {n}"
            )
    family("stepwise_step_retries_total", "counter", "Runs that were a retry (attempt > 1).")
    for step, c in sorted(counters.items()):
        out.append(f"stepwise_step_retries_total{_labels(step=step)} {c['retries']}")
    family("stepwise_step_duration_seconds", "histogram", "Duration of step runs in this process.")
    for step, c in sorted(counters.items()):
        cumulative = 0
        bounds = [repr(float(b)) for b in BUCKETS] + ["+Inf"]
        for le, n in zip(bounds, c["buckets"], strict=True):
            cumulative += n
            out.append(
                f"stepwise_step_duration_seconds_bucket{_labels(step=step, le=le)} {cumulative}"
            )
        out.append(f"stepwise_step_duration_seconds_sum{_labels(step=step)} {c['duration_sum']!r}")
        out.append(f"stepwise_step_duration_seconds_count{_labels(step=step)} {c['count']}")

    seconds = window["window_seconds"]
    gauges = (
        ("count", "stepwise_window_runs", f"Runs in the last {seconds:g}s, all instances."),
        ("errors", "stepwise_window_errors", f"Failed runs in the last {seconds:g}s."),
        ("retries", "stepwise_window_retries", f"Retried runs in the last {seconds:g}s."),
        ("p50_ms", "stepwise_window_duration_p50_seconds", "Median run duration in the window."),
        ("p99_ms", "stepwise_window_duration_p99_seconds", "p99 run duration in the window."),
    )
    for field, name, help_text in gauges:
        family(name, "gauge", help_text)
        for step in window["steps"]:
            value = step[field]
            if field.endswith("_ms"):
                value = None if value is None else value / 1000.0
            out.append(f"{name}{_labels(step=step['step'])} {_num(value)}")
    family("stepwise_queue_deliveries", "gauge", "Deliveries by step and status.")
    for step, statuses in sorted(window["queue"]["by_step"].items()):
        for status, n in sorted(statuses.items()):
            out.append(f"stepwise_queue_deliveries{_labels(step=step, status=status)} {n}")
    family("stepwise_queue_depth", "gauge", "Deliveries due or running, all steps.")
    out.append(f"stepwise_queue_depth {window['queue']['depth']}")
    family(
        "stepwise_queue_oldest_pending_seconds",
        "gauge",
        "How long the oldest due delivery has waited (0 when none).",
    )
    oldest = window["queue"]["oldest_pending"]
    waited = float(oldest["waiting_seconds"]) if oldest else 0.0
    out.append(f"stepwise_queue_oldest_pending_seconds {_num(waited)}")
    return "\n".join(out) + "\n"
