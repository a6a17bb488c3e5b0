"""The Workbench's reads of the runtime's tables (SQLAlchemy Core: bound parameters only)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.runtime import _json
from app.runtime._schema import cron_marks, deliveries, events, state, step_runs, stream_items

from .runs import ERROR_OUTCOMES

_RUN_COLUMNS = (
    step_runs.c.trace_id,
    step_runs.c.step,
    step_runs.c.kind,
    step_runs.c.delivery_id,
    step_runs.c.attempt,
    step_runs.c.started_at,
    step_runs.c.duration_ms,
    step_runs.c.outcome,
    step_runs.c.error,
    step_runs.c.detail,
)


def _row(row: Any) -> dict[str, Any]:
    # Column names come back as `quoted_name` (a str subclass orjson refuses as a key).
    return {str(k): v for k, v in row._mapping.items()}


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return _json.loads(text)
    except ValueError:
        return text


# -- traces ---------------------------------------------------------------------------------------


async def recent_traces(
    conn: AsyncConnection,
    *,
    since: float,
    limit: int,
    step: str | None = None,
    errors_only: bool = False,
) -> list[dict[str, Any]]:
    """The newest traces: first start, end, number of runs and failures, steps involved."""
    failed = case((step_runs.c.outcome.in_(sorted(ERROR_OUTCOMES)), 1), else_=0)
    query = (
        select(
            step_runs.c.trace_id,
            func.min(step_runs.c.started_at).label("started_at"),
            func.max(step_runs.c.started_at + step_runs.c.duration_ms / 1000.0).label("ended_at"),
            func.count().label("runs"),
            func.sum(failed).label("errors"),
        )
        .where(step_runs.c.started_at >= since)
        .group_by(step_runs.c.trace_id)
        .order_by(func.min(step_runs.c.started_at).desc())
        .limit(limit)
    )
    if step:
        having_step = select(step_runs.c.trace_id).where(step_runs.c.step == step)
        query = query.where(step_runs.c.trace_id.in_(having_step.scalar_subquery()))
    if errors_only:
        query = query.having(func.sum(failed) > 0)
    rows = (await conn.execute(query)).all()
    return [
        {
            "trace_id": r.trace_id,
            "started_at": float(r.started_at),
            "ended_at": float(r.ended_at),
            "duration_ms": (float(r.ended_at) - float(r.started_at)) * 1000.0,
            "runs": int(r.runs),
            "errors": int(r.errors or 0),
        }
        for r in rows
    ]


async def runs_of_traces(conn: AsyncConnection, trace_ids: list[str]) -> list[dict[str, Any]]:
    if not trace_ids:
        return []
    rows = await conn.execute(
        select(*_RUN_COLUMNS)
        .where(step_runs.c.trace_id.in_(trace_ids))
        .order_by(step_runs.c.started_at, step_runs.c.id)
        .limit(10_000)
    )
    return [_row(r) for r in rows]


async def events_of_trace(conn: AsyncConnection, trace_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(events)
        .where(events.c.trace_id == trace_id)
        .order_by(events.c.created_at)
        .limit(1000)
    )
    return [{**_row(r), "data": _loads(r.data)} for r in rows]


async def deliveries_of_trace(conn: AsyncConnection, trace_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            deliveries.c.id,
            deliveries.c.event_id,
            deliveries.c.step,
            deliveries.c.topic,
            deliveries.c.status,
            deliveries.c.attempts,
            deliveries.c.max_attempts,
            deliveries.c.available_at,
            deliveries.c.created_at,
            deliveries.c.finished_at,
            deliveries.c.errors,
        )
        .where(deliveries.c.trace_id == trace_id)
        .order_by(deliveries.c.id)
        .limit(1000)
    )
    return [{**_row(r), "errors": _loads(r.errors) or []} for r in rows]


# -- metrics --------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def step_window_stats(conn: AsyncConnection, since: float) -> dict[str, dict[str, Any]]:
    """Per step over the window: count, errors, retries, p50 and p99 of the duration (ms)."""
    failed = case((step_runs.c.outcome.in_(sorted(ERROR_OUTCOMES)), 1), else_=0)
    retried = case((step_runs.c.attempt > 1, 1), else_=0)
    window = step_runs.c.started_at >= since
    counts = await conn.execute(
        select(
            step_runs.c.step,
            step_runs.c.kind,
            func.count().label("n"),
            func.sum(failed).label("errors"),
            func.sum(retried).label("retries"),
            func.avg(step_runs.c.duration_ms).label("mean"),
            func.max(step_runs.c.duration_ms).label("max"),
        )
        .where(window)
        .group_by(step_runs.c.step, step_runs.c.kind)
    )
    stats: dict[str, dict[str, Any]] = {}
    for r in counts:
        entry = stats.setdefault(
            r.step,
            {"count": 0, "errors": 0, "retries": 0, "mean_ms": 0.0, "max_ms": 0.0, "kind": r.kind},
        )
        total = entry["count"] + int(r.n)
        entry["mean_ms"] = (entry["mean_ms"] * entry["count"] + float(r.mean) * int(r.n)) / total
        entry["count"] = total
        entry["errors"] += int(r.errors or 0)
        entry["retries"] += int(r.retries or 0)
        entry["max_ms"] = max(entry["max_ms"], float(r.max))
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            select(
                step_runs.c.step,
                func.percentile_disc(0.5).within_group(step_runs.c.duration_ms).label("p50"),
                func.percentile_disc(0.99).within_group(step_runs.c.duration_ms).label("p99"),
            )
            .where(window)
            .group_by(step_runs.c.step)
        )
        for r in rows:
            # a run flushed between the two statements has no count yet: left for next time
            if r.step in stats:
                stats[r.step].update(p50_ms=float(r.p50), p99_ms=float(r.p99))
    else:
        durations: dict[str, list[float]] = defaultdict(list)
        pairs = await conn.execute(
            select(step_runs.c.step, step_runs.c.duration_ms)
            .where(window)
            .order_by(step_runs.c.step, step_runs.c.duration_ms)
        )
        for step, duration in pairs:
            durations[step].append(float(duration))
        for step, values in durations.items():
            if step in stats:
                stats[step].update(p50_ms=percentile(values, 0.5), p99_ms=percentile(values, 0.99))
    return stats


async def queue_stats(conn: AsyncConnection, now: float) -> dict[str, Any]:
    """Deliveries by step and status (pending, of which due; running; dead) and the oldest due."""
    due = case((deliveries.c.available_at <= now, 1), else_=0)
    rows = await conn.execute(
        select(
            deliveries.c.step,
            deliveries.c.status,
            func.count().label("n"),
            func.sum(due).label("due"),
        )
        .where(deliveries.c.status.in_(("pending", "running", "dead")))
        .group_by(deliveries.c.step, deliveries.c.status)
    )
    by_step: dict[str, dict[str, int]] = {}
    for r in rows:
        entry = by_step.setdefault(r.step, {"pending": 0, "due": 0, "running": 0, "dead": 0})
        entry[r.status] = int(r.n)
        if r.status == "pending":
            entry["due"] = int(r.due or 0)
    oldest = (
        await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.step,
                deliveries.c.topic,
                deliveries.c.created_at,
                deliveries.c.available_at,
            )
            .where(deliveries.c.status == "pending", deliveries.c.available_at <= now)
            .order_by(deliveries.c.available_at)
            .limit(1)
        )
    ).first()
    totals = {k: sum(e[k] for e in by_step.values()) for k in ("pending", "due", "running", "dead")}
    return {
        "depth": totals["due"] + totals["running"],
        "totals": totals,
        "by_step": by_step,
        "oldest_pending": None
        if oldest is None
        else {
            "id": oldest.id,
            "step": oldest.step,
            "topic": oldest.topic,
            "created_at": oldest.created_at,
            "available_at": oldest.available_at,
            "waiting_seconds": max(0.0, now - float(oldest.available_at)),
        },
    }


# -- state ----------------------------------------------------------------------------------------

_NOT_NULL = state.c.value != "null"  # rows Postgres materializes to lock a missing key


async def state_groups(
    conn: AsyncConnection, *, prefix: str | None, limit: int
) -> list[dict[str, Any]]:
    query = (
        select(
            state.c.group_id,
            func.count().label("keys"),
            func.max(state.c.updated_at).label("updated_at"),
        )
        .where(_NOT_NULL)
        .group_by(state.c.group_id)
        .order_by(state.c.group_id)
        .limit(limit)
    )
    if prefix:
        query = query.where(state.c.group_id.startswith(prefix, autoescape=True))
    rows = await conn.execute(query)
    return [
        {"group": r.group_id, "keys": int(r.keys), "updated_at": float(r.updated_at)} for r in rows
    ]


async def state_items(
    conn: AsyncConnection, group: str, *, prefix: str | None, limit: int
) -> list[dict[str, Any]]:
    query = (
        select(state.c.key, state.c.value, state.c.updated_at)
        .where(state.c.group_id == group, _NOT_NULL)
        .order_by(state.c.key)
        .limit(limit)
    )
    if prefix:
        query = query.where(state.c.key.startswith(prefix, autoescape=True))
    rows = await conn.execute(query)
    return [
        {"key": r.key, "value": _loads(r.value), "updated_at": float(r.updated_at)} for r in rows
    ]


async def state_value(conn: AsyncConnection, group: str, key: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(state.c.value, state.c.updated_at).where(
                state.c.group_id == group, state.c.key == key, _NOT_NULL
            )
        )
    ).first()
    if row is None:
        return None
    return {"group": group, "key": key, "value": _loads(row.value), "updated_at": row.updated_at}


# -- streams --------------------------------------------------------------------------------------

_LIVE_ITEM = stream_items.c.data != "null"  # a deleted item may stay a while as a tombstone


async def stream_summary(conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    rows = await conn.execute(
        select(
            stream_items.c.stream,
            func.count(func.distinct(stream_items.c.group_id)).label("groups"),
            func.count().label("items"),
            func.max(stream_items.c.updated_at).label("updated_at"),
        )
        .where(_LIVE_ITEM)
        .group_by(stream_items.c.stream)
    )
    return {
        r.stream: {"groups": int(r.groups), "items": int(r.items), "updated_at": r.updated_at}
        for r in rows
    }


async def stream_groups(conn: AsyncConnection, stream: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            stream_items.c.group_id,
            func.count().label("items"),
            func.max(stream_items.c.updated_at).label("updated_at"),
        )
        .where(stream_items.c.stream == stream, _LIVE_ITEM)
        .group_by(stream_items.c.group_id)
        .order_by(func.max(stream_items.c.updated_at).desc())
        .limit(limit)
    )
    return [
        {"group": r.group_id, "items": int(r.items), "updated_at": float(r.updated_at)}
        for r in rows
    ]


async def stream_group_items(
    conn: AsyncConnection, stream: str, group: str, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            stream_items.c.id,
            stream_items.c.data,
            stream_items.c.version,
            stream_items.c.updated_at,
        )
        .where(stream_items.c.stream == stream, stream_items.c.group_id == group, _LIVE_ITEM)
        .order_by(stream_items.c.updated_at.desc(), stream_items.c.id)
        .limit(limit)
    )
    return [
        {
            "id": r.id,
            "data": _loads(r.data),
            "version": int(r.version),
            "updated_at": float(r.updated_at),
        }
        for r in rows
    ]


# -- cron -----------------------------------------------------------------------------------------


async def cron_overview(conn: AsyncConnection, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per cron step: its last firing mark, its newest run, and firings waiting to run."""
    if not names:
        return {}
    out: dict[str, dict[str, Any]] = {
        n: {"last_fire_at": None, "last_run": None, "pending": 0} for n in names
    }
    for step, last in await conn.execute(
        select(cron_marks.c.step, cron_marks.c.last_fire_at).where(cron_marks.c.step.in_(names))
    ):
        out[step]["last_fire_at"] = float(last)
    newest = (
        select(step_runs.c.step, func.max(step_runs.c.started_at).label("at"))
        .where(step_runs.c.step.in_(names), step_runs.c.kind == "cron")
        .group_by(step_runs.c.step)
        .subquery()
    )
    rows = await conn.execute(
        select(*_RUN_COLUMNS).join(
            newest, and_(step_runs.c.step == newest.c.step, step_runs.c.started_at == newest.c.at)
        )
    )
    for r in rows:
        out[r.step]["last_run"] = _row(r)
    for step, n in await conn.execute(
        select(deliveries.c.step, func.count())
        .where(deliveries.c.step.in_(names), deliveries.c.status.in_(("pending", "running")))
        .group_by(deliveries.c.step)
    ):
        out[step]["pending"] = int(n)
    return out
