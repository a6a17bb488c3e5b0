"""The Workbench's logic: what each section shows, from the runtime, its tables and this process."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from app.runtime import (
    ApiStepConfig,
    CronStepConfig,
    NotFound,
    Runtime,
    Step,
    add_log_sink,
    remove_log_sink,
)
from app.runtime._cron import next_fire
from app.runtime._unit import Unit
from app.settings import Settings

from . import queries
from .flows import flows_data
from .logs import LogHub
from .runs import ERROR_OUTCOMES, RecentRuns, RunCounters, run_key, safe_listener


def _schema(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_json_schema()
    if model is None:
        return None
    try:
        from pydantic import TypeAdapter

        return TypeAdapter(model).json_schema()
    except Exception:
        return {"description": repr(model)}


def step_config(step: Step) -> dict[str, Any]:
    """The step's config as shown in the Workbench: models as JSON Schema, callables by name."""
    config = step.config
    shown: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if name in ("body", "query", "input"):
            value = _schema(value)
        elif name == "responses":
            value = {str(status): _schema(model) for status, model in value.items()}
        elif name == "middleware":
            value = [getattr(fn, "__qualname__", repr(fn)) for fn in value]
        elif isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif isinstance(value, list):
            value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        shown[name] = value
    return shown


class Workbench:
    """One per app: the log buffer, the recent runs and counters of this process, and reads."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.hub = LogHub(settings.workbench_log_buffer)
        self.recent = RecentRuns()
        self.counters = RunCounters()
        runtime.recorder.add_listener(safe_listener(self.recent))
        runtime.recorder.add_listener(safe_listener(self.counters))

    async def start(self) -> None:
        self.hub.start(asyncio.get_running_loop())
        add_log_sink(self.hub.sink)

    async def stop(self) -> None:
        remove_log_sink(self.hub.sink)
        self.hub.close()

    def now(self) -> float:
        return self.runtime.clock.now()

    # -- flows ----------------------------------------------------------------------------------

    def stream_names(self) -> list[str]:
        return sorted(self.runtime.streams)

    def flows(self) -> dict[str, Any]:
        streams = [{"name": name} for name in self.stream_names()]
        graph = flows_data(self.runtime.registry, streams)
        for entry in graph["steps"]:
            entry["config"] = step_config(self.runtime.registry.get(entry["name"]))
        return graph

    def step(self, name: str) -> Step:
        step = self.runtime.registry.by_name.get(name)
        if step is None:
            raise NotFound(details=[{"field": "step", "message": f"no step named {name!r}"}])
        return step

    # -- traces ---------------------------------------------------------------------------------

    async def traces(
        self, *, window: float, limit: int, step: str | None, errors_only: bool
    ) -> list[dict[str, Any]]:
        """The newest traces; the database picks the candidates, and the runs this process has
        not flushed yet (up to a second old) are counted in, or make a trace of their own."""
        since = self.now() - window
        async with self.runtime.read_connection() as conn:
            found = await queries.recent_traces(
                conn, since=since, limit=limit, step=step, errors_only=errors_only
            )
            stored = await queries.runs_of_traces(conn, [t["trace_id"] for t in found])
        by_trace: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        for run in stored:
            by_trace.setdefault(run["trace_id"], {})[run_key(run)] = run
        for run in self.recent.since(since):
            by_trace.setdefault(run["trace_id"], {}).setdefault(run_key(run), run)
        out = []
        for trace_id, keyed in by_trace.items():
            runs = sorted(keyed.values(), key=lambda r: r["started_at"])
            errors = sum(r["outcome"] in ERROR_OUTCOMES for r in runs)
            if step and all(r["step"] != step for r in runs):
                continue
            if errors_only and not errors:
                continue
            started = runs[0]["started_at"]
            ended = max(r["started_at"] + r["duration_ms"] / 1000 for r in runs)
            root = runs[0]
            out.append(
                {
                    "trace_id": trace_id,
                    "started_at": started,
                    "ended_at": ended,
                    "duration_ms": (ended - started) * 1000,
                    "runs": len(runs),
                    "errors": errors,
                    "root": {
                        "step": root["step"],
                        "kind": root["kind"],
                        "detail": root["detail"],
                        "outcome": root["outcome"],
                    },
                    "steps": list(dict.fromkeys(r["step"] for r in runs)),
                }
            )
        out.sort(key=lambda t: t["started_at"], reverse=True)
        return out[:limit]

    async def trace(self, trace_id: str) -> dict[str, Any]:
        async with self.runtime.read_connection() as conn:
            stored = await queries.runs_of_traces(conn, [trace_id])
            emitted = await queries.events_of_trace(conn, trace_id)
            queued = await queries.deliveries_of_trace(conn, trace_id)
        runs = {run_key(r): r for r in stored}
        for run in self.recent.of_trace(trace_id):
            runs.setdefault(run_key(run), run)
        ordered = sorted(runs.values(), key=lambda r: (r["started_at"], r["step"]))
        logs = self.hub.query(trace_id=trace_id, limit=2000)
        if not ordered and not emitted and not queued and not logs:
            raise NotFound(details=[{"field": "trace_id", "message": "no such trace"}])
        start = min(
            [r["started_at"] for r in ordered] + [e["created_at"] for e in emitted] or [0.0]
        )
        end = max(
            [r["started_at"] + r["duration_ms"] / 1000 for r in ordered]
            + [e["created_at"] for e in emitted]
            or [start]
        )
        root = ordered[0] if ordered else None
        return {
            "trace_id": trace_id,
            "started_at": start,
            "duration_ms": (end - start) * 1000,
            "root": root,
            "steps": list(dict.fromkeys(r["step"] for r in ordered)),
            "runs": [{**r, "offset_ms": (r["started_at"] - start) * 1000} for r in ordered],
            "events": emitted,
            "deliveries": queued,
            "logs": logs,
            "outcome": _trace_outcome(ordered, queued),
        }

    # -- metrics --------------------------------------------------------------------------------

    async def metrics(self, window: float) -> dict[str, Any]:
        now = self.now()
        async with self.runtime.read_connection() as conn:
            stats = await queries.step_window_stats(conn, now - window)
            queue = await queries.queue_stats(conn, now)
        steps = []
        for step in self.runtime.registry.steps:
            entry = stats.get(step.name, {})
            steps.append(
                {
                    "step": step.name,
                    "type": step.type,
                    "count": entry.get("count", 0),
                    "errors": entry.get("errors", 0),
                    "retries": entry.get("retries", 0),
                    "p50_ms": entry.get("p50_ms"),
                    "p99_ms": entry.get("p99_ms"),
                    "mean_ms": entry.get("mean_ms"),
                    "max_ms": entry.get("max_ms"),
                    "queue": queue["by_step"].get(
                        step.name, {"pending": 0, "due": 0, "running": 0, "dead": 0}
                    ),
                }
            )
        return {"window_seconds": window, "at": now, "steps": steps, "queue": queue}

    # -- state ----------------------------------------------------------------------------------

    async def write_state(self, group: str, key: str, value: Any) -> None:
        unit = Unit(self.runtime.engine, self.runtime.clock.now)
        unit.set(group, key, value)
        await unit.commit()

    async def delete_state(self, group: str, key: str | None) -> None:
        unit = Unit(self.runtime.engine, self.runtime.clock.now)
        if key is None:
            unit.clear(group)
        else:
            unit.delete(group, key)
        await unit.commit()

    # -- cron -----------------------------------------------------------------------------------

    async def cron(self) -> list[dict[str, Any]]:
        steps = self.runtime.registry.cron_steps
        async with self.runtime.read_connection() as conn:
            marks = await queries.cron_overview(conn, [s.name for s in steps])
        now = self.now()
        out = []
        for step in steps:
            config = step.config
            assert isinstance(config, CronStepConfig)
            out.append(
                {
                    "name": step.name,
                    "schedule": config.schedule,
                    "timezone": config.timezone,
                    "description": config.description,
                    "flows": list(config.flows),
                    "emits": sorted(config.emit_topics),
                    "next_fire_at": next_fire(config, now),
                    **marks.get(step.name, {}),
                }
            )
        return out

    # -- endpoints ------------------------------------------------------------------------------

    def endpoints(self) -> list[dict[str, Any]]:
        out = []
        for step in self.runtime.registry.api_steps:
            config = step.config
            assert isinstance(config, ApiStepConfig)
            out.append(
                {
                    "name": step.name,
                    "method": config.method,
                    "path": config.path,
                    "auth": config.auth,
                    "summary": config.summary,
                    "description": config.description,
                    "path_params": config.path_params,
                    "body": _schema(config.body),
                    "query": _schema(config.query),
                    "responses": {
                        str(status): _schema(model) for status, model in config.responses.items()
                    },
                    "emits": sorted(config.emit_topics),
                    "flows": list(config.flows),
                    "rate_limit": config.rate_limit,
                }
            )
        return sorted(out, key=lambda e: (e["path"], e["method"]))


def _trace_outcome(runs: list[dict[str, Any]], deliveries: list[dict[str, Any]]) -> str:
    if any(d["status"] == "dead" for d in deliveries):
        return "dead"
    if any(d["status"] in ("pending", "running") for d in deliveries):
        return "running"
    last_by_step: dict[tuple[Any, Any], str] = {}
    for run in runs:
        last_by_step[(run["step"], run["delivery_id"])] = run["outcome"]
    if any(outcome != "ok" for outcome in last_by_step.values()):
        return "error"
    return "ok"
