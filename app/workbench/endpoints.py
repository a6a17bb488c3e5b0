"""The Workbench's HTTP surface: the page, its assets, the JSON API and `GET /metrics`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, JsonValue, model_validator
from starlette.responses import Response, StreamingResponse

from app.runtime import AppError, NotFound, _json

from . import prometheus, queries
from .access import require_metrics_reader, require_reader, require_writer
from .service import Workbench

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page may load only what it ships: no CDN, no inline scripts from elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

Reader = Annotated[None, Depends(require_reader)]
Writer = Annotated[None, Depends(require_writer)]


def _workbench(request: Request) -> Workbench:
    workbench: Workbench = request.app.state.workbench
    return workbench


WorkbenchDep = Annotated[Workbench, Depends(_workbench)]


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        _json.dumps_bytes(data),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class _Asset:
    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'
        self.media_type = _TYPES.get(path.suffix, "application/octet-stream")


def _assets() -> dict[str, _Asset]:
    return {p.name: _Asset(p) for p in STATIC.iterdir() if p.is_file() and p.suffix in _TYPES}


class StateWrite(BaseModel):
    value: JsonValue


class Replay(BaseModel):
    ids: list[int] | None = Field(None, max_length=10_000)
    all: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> Replay:
        if (self.ids is None) == (not self.all):
            raise ValueError("give either `ids` (a list of dead-letter ids) or `all: true`")
        return self


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    assets = _assets()

    def asset(name: str, request: Request) -> Response:
        found = assets.get(name)
        if found is None:
            raise NotFound()
        headers = {
            "ETag": found.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    @router.get("/workbench")
    async def page(request: Request, _: Reader) -> Response:
        return asset("index.html", request)

    @router.get("/workbench/assets/{name}")
    async def static_file(name: str, request: Request, _: Reader) -> Response:
        return asset(name, request)

    # -- flows ----------------------------------------------------------------------------------

    @router.get("/workbench/api/flows")
    async def flows(wb: WorkbenchDep, _: Reader) -> Response:
        return json_response(wb.flows())

    # -- logs -----------------------------------------------------------------------------------

    @router.get("/workbench/api/logs")
    async def logs(
        wb: WorkbenchDep,
        _: Reader,
        level: str | None = None,
        step: str | None = None,
        trace_id: str | None = None,
        q: str | None = None,
        after: int = 0,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> Response:
        records = wb.hub.query(
            level=level, step=step, trace_id=trace_id, text=q, after=after, limit=limit
        )
        return json_response(
            {"logs": records, "last_seq": wb.hub.last_seq, "capacity": wb.hub.capacity}
        )

    @router.get("/workbench/api/logs/stream")
    async def log_stream(
        request: Request,
        wb: WorkbenchDep,
        _: Reader,
        level: str | None = None,
        step: str | None = None,
        trace_id: str | None = None,
        q: str | None = None,
        after: int | None = None,
        max_seconds: Annotated[float, Query(gt=0, le=300)] = 25.0,
    ) -> Response:
        """Server-Sent Events: `log` events (data: one record); the stream ends after
        `max_seconds` and the client reconnects with `after` (or `Last-Event-ID`)."""
        last = request.headers.get("last-event-id")
        start = after if after is not None else int(last) if last and last.isdigit() else None
        if start is None:
            start = wb.hub.last_seq

        async def events() -> Any:
            yield b"retry: 1000\n\n"
            async for batch in wb.hub.follow(
                after=start,
                max_seconds=max_seconds,
                level=level,
                step=step,
                trace_id=trace_id,
                text=q,
            ):
                if not batch:
                    yield b": keep-alive\n\n"
                    continue
                yield b"".join(
                    b"id: %d\nevent: log\ndata: %s\n\n" % (r["seq"], _json.dumps_bytes(r))
                    for r in batch
                )
                if await request.is_disconnected():
                    return

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- traces ---------------------------------------------------------------------------------

    @router.get("/workbench/api/traces")
    async def traces(
        wb: WorkbenchDep,
        _: Reader,
        window: Annotated[float, Query(gt=0, le=30 * 86_400)] = 86_400.0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        step: str | None = None,
        errors: bool = False,
    ) -> Response:
        found = await wb.traces(window=window, limit=limit, step=step, errors_only=errors)
        return json_response({"traces": found})

    @router.get("/workbench/api/traces/{trace_id}")
    async def trace(trace_id: str, wb: WorkbenchDep, _: Reader) -> Response:
        return json_response(await wb.trace(trace_id))

    # -- state ----------------------------------------------------------------------------------

    @router.get("/workbench/api/state")
    async def state(
        wb: WorkbenchDep,
        _: Reader,
        group: str | None = None,
        prefix: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> Response:
        async with wb.runtime.read_connection() as conn:
            if group is None:
                return json_response(
                    {"groups": await queries.state_groups(conn, prefix=prefix, limit=limit)}
                )
            items = await queries.state_items(conn, group, prefix=prefix, limit=limit)
        return json_response({"group": group, "items": items})

    @router.get("/workbench/api/state/value")
    async def state_value(group: str, key: str, wb: WorkbenchDep, _: Reader) -> Response:
        async with wb.runtime.read_connection() as conn:
            found = await queries.state_value(conn, group, key)
        if found is None:
            raise NotFound(details=[{"field": "key", "message": f"no key {key!r} in {group!r}"}])
        return json_response(found)

    @router.put("/workbench/api/state")
    async def put_state(
        group: Annotated[str, Query(min_length=1, max_length=255)],
        key: Annotated[str, Query(min_length=1, max_length=255)],
        body: StateWrite,
        wb: WorkbenchDep,
        _: Writer,
    ) -> Response:
        await wb.write_state(group, key, body.value)
        return json_response({"group": group, "key": key, "value": body.value})

    @router.delete("/workbench/api/state")
    async def delete_state(
        group: Annotated[str, Query(min_length=1, max_length=255)],
        wb: WorkbenchDep,
        _: Writer,
        key: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
        all: bool = False,
    ) -> Response:
        if key is None and not all:
            raise AppError(
                "validation_failed",
                400,
                "error.validation_failed",
                [{"field": "key", "message": "give a key, or all=true to clear the whole group"}],
            )
        await wb.delete_state(group, key)
        return Response(status_code=204)

    # -- streams --------------------------------------------------------------------------------

    @router.get("/workbench/api/streams")
    async def streams(
        wb: WorkbenchDep,
        _: Reader,
        stream: str | None = None,
        group: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> Response:
        async with wb.runtime.read_connection() as conn:
            if stream is None:
                stored = await queries.stream_summary(conn)
                names = sorted(set(stored) | set(wb.stream_names()))
                empty = {"groups": 0, "items": 0, "updated_at": None}
                return json_response(
                    {
                        "streams": [
                            {"name": n, "declared": n in wb.runtime.streams, **stored.get(n, empty)}
                            for n in names
                        ]
                    }
                )
            if group is None:
                groups = await queries.stream_groups(conn, stream, limit)
                return json_response({"stream": stream, "groups": groups})
            items = await queries.stream_group_items(conn, stream, group, limit)
        return json_response({"stream": stream, "group": group, "items": items})

    # -- dead letters ---------------------------------------------------------------------------

    @router.get("/workbench/api/dlq")
    async def dlq(
        wb: WorkbenchDep, _: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> Response:
        return json_response({"dead_letters": await wb.runtime.dead_letters(limit)})

    @router.post("/workbench/api/dlq/replay")
    async def replay(body: Replay, wb: WorkbenchDep, _: Writer) -> Response:
        replayed = await wb.runtime.replay(None if body.all else body.ids)
        return json_response({"replayed": replayed})

    @router.post("/workbench/api/dlq/{delivery_id}/replay")
    async def replay_one(delivery_id: int, wb: WorkbenchDep, _: Writer) -> Response:
        replayed = await wb.runtime.replay([delivery_id])
        if not replayed:
            raise NotFound(
                details=[{"field": "delivery_id", "message": f"{delivery_id} is not dead-lettered"}]
            )
        return json_response({"replayed": replayed})

    # -- metrics --------------------------------------------------------------------------------

    @router.get("/workbench/api/metrics")
    async def metrics(
        wb: WorkbenchDep,
        _: Reader,
        window: Annotated[float | None, Query(gt=0, le=30 * 86_400)] = None,
    ) -> Response:
        return json_response(await wb.metrics(window or wb.settings.workbench_metrics_window))

    @router.get("/metrics")
    async def prometheus_metrics(
        wb: WorkbenchDep, _: Annotated[None, Depends(require_metrics_reader)]
    ) -> Response:
        window = await wb.metrics(wb.settings.workbench_metrics_window)
        text = prometheus.render(wb.counters.snapshot(), window)
        return Response(text, media_type=prometheus.CONTENT_TYPE)

    # -- cron -----------------------------------------------------------------------------------

    @router.get("/workbench/api/cron")
    async def cron(wb: WorkbenchDep, _: Reader) -> Response:
        return json_response({"cron": await wb.cron()})

    @router.post("/workbench/api/cron/{name}/fire")
    async def fire(name: str, wb: WorkbenchDep, _: Writer) -> Response:
        try:
            trace_id = await wb.runtime.fire_cron(name)
        except KeyError:
            raise NotFound(
                details=[{"field": "name", "message": f"no cron step named {name!r}"}]
            ) from None
        return json_response({"step": name, "trace_id": trace_id}, status=202)

    # -- endpoints ------------------------------------------------------------------------------

    @router.get("/workbench/api/endpoints")
    async def endpoints(wb: WorkbenchDep, _: Reader) -> Response:
        return json_response({"endpoints": wb.endpoints()})

    return router
