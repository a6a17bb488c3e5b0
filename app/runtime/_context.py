"""What a handler gets: the event or request, and `ctx` (emit, state, streams, logger, trace)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from . import _json
from ._db import read_connection
from ._errors import EmitError
from ._store import NewEvent
from ._tracing import time_ordered_hex
from ._unit import Unit

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._steps import Step


class Event:
    """An event as a handler sees it: `event.data`, `event.topic`, `event.id`, `event.trace_id`.

    `event["data"]` works too, so the article's examples run as written.
    """

    __slots__ = ("attempt", "data", "id", "topic", "trace_id")

    def __init__(self, topic: str, data: Any, id: str, trace_id: str, attempt: int = 1) -> None:
        self.topic = topic
        self.data = data
        self.id = id
        self.trace_id = trace_id
        self.attempt = attempt

    def __getitem__(self, name: str) -> Any:
        if name in self.__slots__:
            return getattr(self, name)
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default) if name in self.__slots__ else default

    def __repr__(self) -> str:
        return f"Event(topic={self.topic!r}, id={self.id!r}, data={self.data!r})"


class State:
    """`ctx.state`: a key-value store of JSON values in groups, shared by every step.

    Writes become visible to other steps when the step succeeds, together with its emits.
    """

    __slots__ = ("_unit",)

    def __init__(self, unit: Unit) -> None:
        self._unit = unit

    async def get(self, group: str, key: str) -> Any:
        """The value, or None when there is none."""
        return await self._unit.get(group, key)

    async def set(self, group: str, key: str, value: Any) -> Any:
        """Store a JSON value (dict, list, str, number, bool or a pydantic model)."""
        self._unit.set(group, key, value)
        return value

    async def delete(self, group: str, key: str) -> None:
        self._unit.delete(group, key)

    async def get_group(self, group: str) -> dict[str, Any]:
        """Every key of the group, as a dict of key -> value."""
        return await self._unit.get_group(group)

    async def clear(self, group: str) -> None:
        """Delete every key of the group."""
        self._unit.clear(group)

    async def increment(self, group: str, key: str, by: int | float = 1) -> int | float:
        """Atomically add `by` (a missing value counts as 0) and return the new value."""

        def add(current: Any) -> Any:
            if current is None:
                return by
            if isinstance(current, bool) or not isinstance(current, int | float):
                raise TypeError(f"state {group}/{key} holds {type(current).__name__}, not a number")
            return current + by

        result: int | float = await self._unit.modify(group, key, add)
        return result

    async def update(self, group: str, key: str, fn: Callable[[Any], Any]) -> Any:
        """Compare-and-set: store `fn(current)` atomically (no update is ever lost); returns it."""
        return await self._unit.modify(group, key, fn)


class Context:
    """The second argument of every handler."""

    def __init__(
        self,
        runtime: Runtime,
        step: Step,
        unit: Unit,
        *,
        trace_id: str,
        attempt: int = 1,
        locale: str = "en",
        user: Any = None,
    ) -> None:
        self._runtime = runtime
        self._step = step
        self._unit = unit
        self.trace_id = trace_id
        self.attempt = attempt
        self.locale = locale
        self.user = user
        self.step = step.name
        self.state = State(unit)
        self._logger: Any = None
        self._streams: Any = None

    @property
    def logger(self) -> Any:
        """A structlog logger whose records carry `trace_id` and `step`."""
        if self._logger is None:
            self._logger = self._runtime.logger.bind(trace_id=self.trace_id, step=self.step)
        return self._logger

    @property
    def streams(self) -> Any:
        """`ctx.streams.<name>`: the declared real-time streams."""
        if self._streams is None:
            self._streams = self._runtime.streams_for(self._unit, self)
        return self._streams

    async def emit(self, event: dict[str, Any] | str, data: Any = None) -> str:
        """Publish `{"topic", "data"}` (optional `delay` seconds, `message_group_id`).

        The event is stored when the step succeeds; returns its id.
        """
        if isinstance(event, str):
            event = {"topic": event, "data": data}
        if not isinstance(event, dict) or "topic" not in event:
            raise EmitError(f"step {self.step!r}: emit takes {{'topic': ..., 'data': ...}}")
        topic = event["topic"]
        unknown = set(event) - {"topic", "data", "delay", "message_group_id", "messageGroupId"}
        if unknown:
            raise EmitError(f"step {self.step!r}: emit got unknown fields {sorted(unknown)}")
        new = self._runtime.build_event(
            topic,
            event.get("data"),
            trace_id=self.trace_id,
            emitted_by=self._step,
            delay=float(event.get("delay") or 0),
            message_group_id=event.get("message_group_id") or event.get("messageGroupId"),
        )
        self._unit.add_event(new)
        return new.id

    def now(self) -> datetime:
        """The runtime clock's time, aware, in UTC: tests move it with a `ManualClock`."""
        return datetime.fromtimestamp(self._runtime.clock.now(), UTC)

    def t(self, key: str, **params: Any) -> str:
        """Translate a message key into the request's language."""
        return self._runtime.translate(key, self.locale, **params)

    async def session(self) -> AsyncSession:
        """An SQLAlchemy session in this step's unit of work: what you write through it commits
        together with the step's state writes and emits, or not at all."""
        return await self._unit.session()

    def reader(self) -> Any:
        """`async with ctx.reader() as session:` a read-only session outside the unit of work."""
        return _reader_session(self._runtime.engine)

    def for_thread(self, loop: asyncio.AbstractEventLoop) -> ThreadContext:
        return ThreadContext(self, loop)


class _SyncProxy:
    """Calls the async methods of `target` from a worker thread, blocking until they finish."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(attr(*args, **kwargs), self._loop).result()

        return call


class _SyncStreams:
    """`ctx.streams.<name>.set(...)` from a worker thread: each stream's methods, blocking."""

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _SyncProxy(getattr(self._ctx.streams, name), self._loop)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


class ThreadContext:
    """The context a plain `def` handler gets: the same members, called without `await`."""

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop
        self.trace_id = ctx.trace_id
        self.attempt = ctx.attempt
        self.locale = ctx.locale
        self.user = ctx.user
        self.step = ctx.step
        self.logger = ctx.logger
        self.state = _SyncProxy(ctx.state, loop)
        self.streams = _SyncStreams(ctx, loop)

    def emit(self, event: dict[str, Any] | str, data: Any = None) -> str:
        return asyncio.run_coroutine_threadsafe(self._ctx.emit(event, data), self._loop).result()

    def t(self, key: str, **params: Any) -> str:
        return self._ctx.t(key, **params)

    def now(self) -> datetime:
        return self._ctx.now()


@contextlib.asynccontextmanager
async def _reader_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with read_connection(engine) as conn, AsyncSession(bind=conn) as session:
        yield session


def new_id() -> str:
    return time_ordered_hex()


def validate_event_data(runtime_step: Step, topic: str, data: Any, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
        )
        raise EmitError(
            f"data for topic {topic!r} does not fit the input of step {runtime_step.name!r}: "
            f"{fields}"
        ) from None


def encode_event_data(step_name: str, topic: str, data: Any) -> str:
    try:
        return _json.dumps(data)
    except TypeError as exc:
        raise EmitError(
            f"step {step_name!r}: data for topic {topic!r} is not JSON: {exc}"
        ) from None


__all__ = ["Context", "Event", "NewEvent", "State", "ThreadContext"]
