"""The Runtime: the registry of steps, the database, the worker, the scheduler and the API glue."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _json, _store
from ._api import mount_api_steps
from ._clock import Clock
from ._config import ApiStepConfig, CronStepConfig, EventStepConfig
from ._context import Context, encode_event_data, new_id, validate_event_data
from ._cron import CronScheduler
from ._db import driver_transaction, one_statement, read_connection
from ._errors import AppError, EmitError
from ._logging import get_logger
from ._node import NodePool
from ._recorder import Recorder, StepRun
from ._schema import MAX_GROUP_ID
from ._sqlite_wakeup import WakeupReceiver, WakeupSender, wakeup_folder
from ._steps import Registry, Step, discover
from ._store import NewEvent
from ._stream_http import mount_streams
from ._stream_hub import StreamHub
from ._stream_store import CHANNEL as STREAM_CHANNEL
from ._streams import Stream, StreamAccess, Streams
from ._tracing import new_trace_id
from ._unit import Unit, notify_new_work
from ._wakeup import CHANNEL, PgListener
from ._worker import Handoff, Worker

Translator = Callable[..., str]
# token -> the signed-in user, or None: how a WebSocket client's first message signs it in.
Authenticator = Callable[[str], Awaitable[Any]]
# (step, req, ctx, call_next) -> result: wraps every API step (the app's rate limiter, ...).
ApiMiddleware = Callable[[Step, Any, Context, Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass
class RuntimeSettings:
    """Knobs of the engine; the application fills them from its settings."""

    worker_concurrency: int = 32
    lease_seconds: float = 15.0
    lease_renew_seconds: float = 5.0
    poll_seconds: float = 5.0  # fallback poll with LISTEN/NOTIFY (Postgres)
    sqlite_poll_seconds: float = 1.0  # SQLite has no NOTIFY across processes
    shutdown_grace_seconds: float = 10.0
    claim_batch: int = 100
    commit_batch: int = 500
    record_runs: bool = True
    history_hours: float = 72.0  # done deliveries, their events and step runs are kept this long
    housekeeping_seconds: float = 600.0
    node_processes: int = 1  # Node.js processes running the JavaScript/TypeScript steps
    node_cancel_grace_seconds: float = 2.0  # a Node process not answering a cancel is killed
    # Streams: frames queued for one client before it is cut off as too slow.
    stream_queue_size: int = 1000
    # A quiet stream connection gets a heartbeat this often.
    stream_heartbeat_seconds: float = 15.0
    # A client that takes nothing for this long is cut off.
    stream_send_timeout_seconds: float = 10.0
    # Open stream connections (WebSocket and SSE) one user may hold on one instance.
    stream_max_connections_per_user: int = 20
    # Subscriptions one WebSocket connection may hold.
    stream_max_subscriptions: int = 100
    # A WebSocket connected without a user must sign in with its first message within this.
    stream_auth_timeout_seconds: float = 10.0
    # Deletes are remembered this long, so that a client resuming sees them.
    stream_tombstone_seconds: float = 86_400.0


def _default_translate(key: str, locale: str, **params: Any) -> str:
    return key.format(**params) if params else key


class Runtime:
    """One per process. Built from a steps folder and an engine; started by the app's lifespan."""

    def __init__(
        self,
        registry: Registry,
        engine: AsyncEngine,
        *,
        settings: RuntimeSettings | None = None,
        clock: Clock | None = None,
        translator: Translator | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.settings = settings or RuntimeSettings()
        self.clock = clock or Clock()
        self.translator = translator or _default_translate
        self.logger = get_logger()
        self.recorder = Recorder(engine)
        self.recorder.enabled = self.settings.record_runs
        self.worker: Worker | None = None
        self.scheduler: CronScheduler | None = None
        self.listener: PgListener | None = None
        self.streams: dict[str, Stream] = {d.name: Stream(d, self) for d in registry.streams}
        self.stream_hub = StreamHub(self)
        self.stream_authenticator: Authenticator | None = None
        self._notify_listeners: dict[str, list[Callable[[str | None], None]]] = {}
        self._api_middleware: list[ApiMiddleware] = []
        self.node = NodePool.for_registry(
            registry,
            size=self.settings.node_processes,
            cancel_grace=self.settings.node_cancel_grace_seconds,
        )
        self.started = False
        self._wakeup_receiver: WakeupReceiver | None = None
        self._wakeup_sender: WakeupSender | None = None

    @classmethod
    def from_folder(cls, steps_dir: Path, engine: AsyncEngine, **kwargs: Any) -> Runtime:
        return cls(discover(steps_dir), engine, **kwargs)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def poll_seconds(self) -> float:
        if self.is_sqlite:
            return self.settings.sqlite_poll_seconds
        return self.settings.poll_seconds

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(
        self, *, worker: bool = True, scheduler: bool | None = None, concurrency: int | None = None
    ) -> None:
        """Start background work. `worker`: run deliveries; `scheduler`: enqueue cron firings."""
        scheduler = worker if scheduler is None else scheduler
        self.recorder.start()
        if self.node is not None:
            self.node.open()  # its Node processes boot in the background
        self.stream_hub.shutting_down = False
        if self.streams and not self.is_sqlite:
            listeners = self._notify_listeners.setdefault(STREAM_CHANNEL, [])
            if self.stream_hub.on_notify not in listeners:
                listeners.append(self.stream_hub.on_notify)
        if worker and self.registry.queued_steps:
            self.worker = Worker(self, concurrency=concurrency or self.settings.worker_concurrency)
            await self.worker.start()
            if self.is_sqlite:
                self._wakeup_receiver = WakeupReceiver(self._wakeup_folder(), self.worker.wake)
                self._wakeup_receiver.open()
        if not self.is_sqlite and (self.worker is not None or self._notify_listeners):
            channels = sorted({CHANNEL, *self._notify_listeners})
            self.listener = PgListener(self.engine.url, self._on_notify, channels)
            self.listener.start()
        if scheduler:
            self.scheduler = CronScheduler(self)
            await self.scheduler.start()
        self.started = True

    async def stop(self, grace: float | None = None) -> None:
        await self.stream_hub.shutdown()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._wakeup_receiver is not None:
            self._wakeup_receiver.close()
            self._wakeup_receiver = None
        if self.worker is not None:
            await self.worker.stop(grace)
        if self.node is not None:
            await self.node.stop()
        if self.listener is not None:
            await self.listener.stop()
        await self.recorder.stop()
        self.started = False

    def on_notify(self, channel: str, callback: Callable[[str | None], None]) -> None:
        """Be called with the payload when any instance NOTIFYs `channel` (registered before
        `start`); with None after the LISTEN connection (re)connects, as notifications sent
        meanwhile are lost."""
        self._notify_listeners.setdefault(channel, []).append(callback)

    def _on_notify(self, channel: str, payload: str | None) -> None:
        if channel == CHANNEL:
            if self.worker is not None:
                self.worker.wake()
            return
        for callback in self._notify_listeners.get(channel, []):
            callback(payload)

    def handoff(self) -> Handoff | None:
        """An offer from our own worker to take an emit's new deliveries in the emit's
        transaction (SQLite, where the worker shares the process and the write lock)."""
        if self.worker is None or not self.is_sqlite:
            return None
        return self.worker.handoff()

    def notify_local(self) -> None:
        """New work was committed by this process: wake our own worker at once, or (SQLite,
        where there is no NOTIFY) the worker processes of the same database file."""
        if self.worker is not None:
            self.worker.wake()
        elif self.is_sqlite:
            if self._wakeup_sender is None:
                self._wakeup_sender = WakeupSender(self._wakeup_folder())
            self._wakeup_sender.notify()

    def _wakeup_folder(self) -> Path:
        return wakeup_folder(self.engine.url.database or "")

    def read_connection(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return read_connection(self.engine)

    def mount(self, app: FastAPI) -> None:
        """Add the API steps' routes and the streams' endpoints (`/streams`) to `app`."""
        mount_streams(app, self)
        mount_api_steps(app, self)

    # -- streams --------------------------------------------------------------------------------

    def stream(self, name: str) -> StreamAccess:
        """A declared stream, outside any step: each write commits (and is broadcast) at once."""
        try:
            return self.streams[name].bind(None)
        except KeyError:
            known = ", ".join(sorted(self.streams)) or "none"
            raise KeyError(f"no stream named {name!r} (declared streams: {known})") from None

    def set_stream_authenticator(self, authenticate: Authenticator | None) -> None:
        """How a WebSocket client that connected without a user signs in with its first
        message, `{"auth": {"token": ...}}`: `await authenticate(token)` returns the user or
        None. Without one (the default), such clients are refused."""
        self.stream_authenticator = authenticate

    def new_unit(self) -> Unit:
        return Unit(self.engine, self.clock.now)

    def add_api_middleware(self, middleware: ApiMiddleware) -> None:
        """Wrap every API step's handler (outside the step's own `middleware`)."""
        self._api_middleware.append(middleware)

    # -- contexts and calls ---------------------------------------------------------------------

    def new_trace_id(self) -> str:
        return new_trace_id()

    def context(
        self,
        step: Step,
        unit: Unit,
        *,
        trace_id: str,
        attempt: int = 1,
        locale: str = "en",
        user: Any = None,
    ) -> Context:
        return Context(
            self, step, unit, trace_id=trace_id, attempt=attempt, locale=locale, user=user
        )

    def streams_for(self, unit: Unit, ctx: Context) -> Streams:
        return Streams(self.streams, unit, ctx)

    def translate(self, key: str, locale: str, **params: Any) -> str:
        return self.translator(key, locale, **params)

    async def run_api(self, step: Step, req: Any, *, trace_id: str, locale: str = "en") -> Any:
        """Run an API step's handler (through its middleware) and commit its effects."""
        assert step.handler is not None and isinstance(step.config, ApiStepConfig)
        unit = Unit(self.engine, self.clock.now)
        ctx = self.context(step, unit, trace_id=trace_id, locale=locale, user=req.user)
        started = self.clock.now()
        t0 = time.perf_counter()
        outcome, error = "ok", None
        try:
            call: Callable[[], Awaitable[Any]] = functools.partial(step.handler.invoke, req, ctx)
            for middleware in reversed(step.config.middleware):
                call = functools.partial(_call_middleware, middleware, req, ctx, call)
            for app_middleware in reversed(self._api_middleware):
                call = functools.partial(app_middleware, step, req, ctx, call)
            result = await call()
            unit.closed = True
            handoff = self.handoff() if unit.emits else None
            await unit.commit(handoff=handoff)
            if unit.emits and handoff is None:
                self.notify_local()
            return result
        except BaseException as exc:
            await unit.rollback()
            outcome = "error"
            error = f"{exc.code}" if isinstance(exc, AppError) else f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.recorder.record(
                StepRun(
                    trace_id=trace_id,
                    step=step.name,
                    kind="api",
                    attempt=1,
                    started_at=started,
                    duration_ms=(time.perf_counter() - t0) * 1000,
                    outcome=outcome,
                    error=error,
                    detail=f"{req.method} {req.path}",
                )
            )

    # -- events ---------------------------------------------------------------------------------

    def build_event(
        self,
        topic: str,
        data: Any,
        *,
        trace_id: str,
        emitted_by: Step | None,
        delay: float = 0.0,
        message_group_id: str | None = None,
    ) -> NewEvent:
        """Check an emit (declared topic, data fits every subscriber) and prepare its rows."""
        if emitted_by is not None and topic not in emitted_by.config.emit_topics:
            declared = ", ".join(sorted(emitted_by.config.emit_topics)) or "none"
            raise EmitError(
                f"step {emitted_by.name!r} emitted topic {topic!r}, which it does not declare "
                f"in `emits` (declared: {declared})"
            )
        if delay < 0:
            raise EmitError(f"emit of {topic!r}: delay must be >= 0 seconds")
        if message_group_id is not None:
            message_group_id = str(message_group_id)
            if not 0 < len(message_group_id) <= MAX_GROUP_ID or "\x00" in message_group_id:
                raise EmitError(
                    f"emit of {topic!r}: message_group_id must be 1 to {MAX_GROUP_ID} "
                    "characters, without NUL"
                )
        subscribers = self.registry.subscribers.get(topic, [])
        for sub in subscribers:
            assert isinstance(sub.config, EventStepConfig)
            if sub.config.input is not None:
                validate_event_data(sub, topic, data, sub.config.input)
        source = emitted_by.name if emitted_by is not None else "cli"
        return NewEvent(
            id=new_id(),
            topic=topic,
            data=encode_event_data(source, topic, data),
            trace_id=trace_id,
            emitted_by=emitted_by.name if emitted_by is not None else None,
            delay=delay,
            message_group_id=message_group_id,
            subscribers=[
                (s.name, s.config.retry.max_attempts)  # type: ignore[union-attr]
                for s in subscribers
            ],
        )

    async def emit(
        self,
        topic: str,
        data: Any,
        *,
        trace_id: str | None = None,
        delay: float = 0.0,
        message_group_id: str | None = None,
    ) -> str:
        """Publish an event from outside any step (the CLI, tests); returns its id."""
        emit = {"topic": topic, "data": data, "delay": delay, "message_group_id": message_group_id}
        return (await self.emit_many([emit], trace_id=trace_id))[0]

    async def emit_many(
        self, emits: Sequence[dict[str, Any]], *, trace_id: str | None = None
    ) -> list[str]:
        """Publish several events in one transaction (checked like a step's emits)."""
        known = self.registry.topics()
        batch = []
        for emit in emits:
            if emit["topic"] not in known:
                raise EmitError(f"no step emits or subscribes to topic {emit['topic']!r}")
            batch.append(
                self.build_event(
                    emit["topic"],
                    emit.get("data"),
                    trace_id=trace_id or new_trace_id(),
                    emitted_by=None,
                    delay=float(emit.get("delay") or 0.0),
                    message_group_id=emit.get("message_group_id"),
                )
            )
        if not self.is_sqlite:
            # One statement, atomic by itself: in autocommit, one round trip. A connection cut
            # while it runs leaves the caller unsure, as a cut during a COMMIT would.
            async with one_statement(self.engine) as conn:
                await _store.insert_events(conn, batch, self.clock.now(), notify=True)
            self.notify_local()
            return [e.id for e in batch]
        handoff = self.handoff()
        with _store.settling(handoff):
            async with driver_transaction(self.engine) as db:
                _store.insert_events_sqlite(db, batch, self.clock.now(), handoff)
        if handoff is None:
            self.notify_local()
        # One loop turn, once the handlers have been handed their deliveries: a caller emitting
        # in a loop still lets them (and every other task) run.
        await asyncio.sleep(0)
        return [e.id for e in batch]

    # -- cron and dead letters ------------------------------------------------------------------

    async def fire_cron(self, name: str) -> str:
        """Run a cron step now (the Workbench's button), outside its schedule; returns the
        firing's trace id."""
        step = self.registry.by_name.get(name)
        if step is None or not isinstance(step.config, CronStepConfig):
            raise KeyError(f"no cron step named {name!r}")
        scheduler = self.scheduler or CronScheduler(self)
        trace_id = new_trace_id()
        await scheduler.fire(step, self.clock.now(), manual=True, trace_id=trace_id)
        return trace_id

    async def purge_history(self) -> dict[str, int]:
        """Delete finished work older than `history_hours` (workers do this every few minutes)."""
        before = self.clock.now() - self.settings.history_hours * 3600
        async with self.engine.begin() as conn:
            return await _store.purge_history(conn, before)

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.read_connection() as conn:
            return await _store.list_dead(conn, limit)

    async def replay(self, ids: Sequence[int] | None) -> list[int]:
        """Put dead letters back (all of them with None); returns the ids replayed."""
        async with self.engine.begin() as conn:
            replayed = await _store.replay_dead(conn, ids, self.clock.now())
            if replayed:
                await notify_new_work(conn)
        self.notify_local()
        return replayed

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        from sqlalchemy import select

        from ._schema import deliveries

        async with self.read_connection() as conn:
            row = (
                await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))
            ).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["errors"] = _json.loads(data["errors"])
        return data


async def _call_middleware(
    middleware: Callable[..., Any], req: Any, ctx: Context, nxt: Callable[[], Awaitable[Any]]
) -> Any:
    return await middleware(req, ctx, nxt)
