"""Streams at run time: `ctx.streams.<name>` inside a step, `runtime.stream(name)` outside.

Inside a step, writes join the step's unit of work: they are applied in the transaction that
stores its state writes and emits, and reach subscribers after it commits (not at all if the
handler raises). Outside a step each write commits on its own.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from . import _json
from ._stream_config import StreamDef
from ._stream_store import StreamOp, list_groups

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._unit import Unit

MAX_KEY_LENGTH = 255


class StreamError(ValueError):
    """A stream write the stream refuses: data that does not fit its schema, a bad group or id."""


def _check_key(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise StreamError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_KEY_LENGTH:
        raise StreamError(f"{what} is at most {MAX_KEY_LENGTH} characters")
    return value


class Stream:
    """A declared stream: its schema, its `authorize` hook, and access bound to a unit."""

    def __init__(self, definition: StreamDef, runtime: Runtime) -> None:
        self.definition = definition
        self.name = definition.name
        self.schema: type[BaseModel] = definition.config.item_schema
        self._authorize = definition.config.authorize
        self.runtime = runtime

    def bind(self, unit: Unit | None, ctx: Any = None) -> StreamAccess:
        """Access for one step invocation (`unit`), or committing at once (None)."""
        if unit is not None:
            unit.stream_sink = self.runtime.stream_hub
        return StreamAccess(self, unit)

    def validate(self, group_id: str, item_id: str, data: Any) -> BaseModel:
        _check_key("group_id", group_id)
        _check_key("id", item_id)
        try:
            return self.schema.model_validate(_json.to_jsonable(data))
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
            )
            raise StreamError(
                f"item {item_id!r} does not fit the schema of stream {self.name!r} "
                f"({self.schema.__name__}): {fields}"
            ) from None

    def load(self, raw: str) -> BaseModel:
        return self.schema.model_validate_json(raw)

    async def authorize(self, user: Any, group_id: str) -> bool:
        """May `user` follow `group_id`? Without a hook, any signed-in user may."""
        if self._authorize is None:
            return True
        allowed = self._authorize(user, group_id)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        return bool(allowed)


class StreamAccess:
    """`ctx.streams.<name>` and `runtime.stream(name)`: items by group, and ephemeral events."""

    __slots__ = ("_stream", "_unit")

    def __init__(self, stream: Stream, unit: Unit | None) -> None:
        self._stream = stream
        self._unit = unit

    @property
    def name(self) -> str:
        return self._stream.name

    async def set(self, group_id: str, id: str, data: Any) -> Any:
        """Create or replace an item (validated against the schema); returns the stored item.

        Subscribers get `create` or `update` once the step succeeds."""
        item = self._stream.validate(group_id, id, data)
        await self._write(StreamOp("set", self.name, group_id, id, _json.dumps(item)))
        return item

    async def get(self, group_id: str, id: str) -> Any:
        """The item, or None."""
        raw = await self._unit_or_own().stream_get(self.name, group_id, id)
        return None if raw is None else self._stream.load(raw)

    async def delete(self, group_id: str, id: str) -> None:
        """Remove an item; subscribers get `delete`."""
        _check_key("group_id", group_id)
        _check_key("id", id)
        await self._write(StreamOp("delete", self.name, group_id, id, None))

    async def get_group(self, group_id: str) -> dict[str, Any]:
        """Every item of the group as a dict of id -> item, least recently changed first."""
        rows = await self._unit_or_own().stream_group(self.name, group_id)
        return {item: self._stream.load(raw) for item, raw in rows}

    async def send(self, group_id: str, event: Any) -> None:
        """An ephemeral event for the group's subscribers (say a typing indicator): delivered
        as `{"event": "custom", "data": event}`, never stored."""
        _check_key("group_id", group_id)
        try:
            encoded = _json.dumps(event)
        except TypeError as exc:
            raise StreamError(f"event for stream {self.name!r} is not JSON: {exc}") from None
        await self._write(StreamOp("send", self.name, group_id, None, encoded))

    async def groups(self, limit: int = 100) -> list[dict[str, Any]]:
        """The stream's groups, most recently changed first, with their item counts."""
        async with self._stream.runtime.read_connection() as conn:
            return await list_groups(conn, self.name, limit)

    async def _write(self, op: StreamOp) -> None:
        if self._unit is not None:
            self._unit.add_stream_op(op)
            return
        unit = self._stream.runtime.new_unit()
        unit.stream_sink = self._stream.runtime.stream_hub
        unit.add_stream_op(op)
        await unit.commit()

    def _unit_or_own(self) -> Unit:
        return self._unit if self._unit is not None else self._stream.runtime.new_unit()


class Streams:
    """`ctx.streams.<name>`; a name that no stream declares is an error naming the known ones."""

    def __init__(
        self, streams: dict[str, Stream], unit: Unit | None = None, ctx: Any = None
    ) -> None:
        self._streams = streams
        self._unit = unit
        self._ctx = ctx
        self._bound: dict[str, StreamAccess] = {}

    def __getattr__(self, name: str) -> StreamAccess:
        if name.startswith("_"):
            raise AttributeError(name)
        bound = self._bound.get(name)
        if bound is None:
            try:
                stream = self._streams[name]
            except KeyError:
                known = ", ".join(sorted(self._streams)) or "none"
                raise AttributeError(
                    f"no stream named {name!r} (declared streams: {known})"
                ) from None
            bound = stream.bind(self._unit, self._ctx)
            self._bound[name] = bound
        return bound

    def __getitem__(self, name: str) -> StreamAccess:
        return self.__getattr__(name)

    def __contains__(self, name: str) -> bool:
        return name in self._streams


__all__ = ["Stream", "StreamAccess", "StreamError", "Streams"]
