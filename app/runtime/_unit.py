"""A unit of work: the state writes, emits and stream writes of one step invocation, applied all
or nothing."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from . import _json, _store, _stream_store
from ._db import driver_transaction, read_connection, write_transaction
from ._store import LeaseOffer, NewEvent, StateOp
from ._stream_store import Change, StreamOp
from ._wakeup import CHANNEL as WORK_CHANNEL

_DELETED = object()


class StreamSink(Protocol):
    """Where a unit's stream changes go once committed (the runtime's stream hub)."""

    @property
    def tombstone_seconds(self) -> float: ...

    def committed(self, changes: list[Change]) -> None: ...


class _LeaseLost(Exception):
    """The delivery's lease was lost before its unit could commit: nothing is applied."""


class UnitClosedError(RuntimeError):
    """The invocation this unit belongs to is over (it timed out or finished)."""


class Unit:
    """Buffers a step's effects; nothing reaches the database before `commit`.

    Plain writes (`set`, `delete`, `clear`) and emits are buffered and applied at commit, so a
    handler holds no lock while it runs. `increment` and `update` need the stored value under a
    lock: the first of them opens the unit's own transaction, which stays open (holding that
    row) until the unit commits or rolls back.
    """

    def __init__(self, engine: AsyncEngine, now: Callable[[], float]) -> None:
        self.engine = engine
        self.now = now
        self.ops: list[StateOp] = []
        self.emits: list[NewEvent] = []
        self._overlay: dict[tuple[str, str], Any] = {}
        self._cleared: set[str] = set()
        self.conn: AsyncConnection | None = None
        self._session: AsyncSession | None = None
        self.closed = False
        self.stream_ops: list[StreamOp] = []
        self._stream_overlay: dict[tuple[str, str, str], Any] = {}
        self.stream_sink: StreamSink | None = None

    # -- reads ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.closed:
            raise UnitClosedError("this step invocation is over; its context can no longer be used")

    async def get(self, group: str, key: str) -> Any:
        self._check()
        if _unstorable(group, key):
            return None  # no such key can be stored (Postgres text cannot hold NUL)
        if (group, key) in self._overlay:
            pending = self._overlay[(group, key)]
            return None if pending is _DELETED else _json.loads(pending)
        if group in self._cleared:
            return None
        if self.conn is not None:
            raw = await _store.read_state(self.conn, group, key)
        else:
            async with self._reader() as conn:
                raw = await _store.read_state(conn, group, key)
        return None if raw is None else _json.loads(raw)

    async def get_group(self, group: str) -> dict[str, Any]:
        self._check()
        if _unstorable(group):
            return {}
        stored: dict[str, str] = {}
        if group not in self._cleared:
            if self.conn is not None:
                stored = await _store.read_state_group(self.conn, group)
            else:
                async with self._reader() as conn:
                    stored = await _store.read_state_group(conn, group)
        for (g, key), value in self._overlay.items():
            if g != group:
                continue
            if value is _DELETED:
                stored.pop(key, None)
            else:
                stored[key] = value
        return {key: _json.loads(value) for key, value in stored.items() if value != "null"}

    def _reader(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return read_connection(self.engine)

    async def stream_get(self, stream: str, group: str, item: str) -> str | None:
        """An item's JSON text as this unit would leave it (its own writes first)."""
        self._check()
        if _unstorable(stream, group, item):
            return None
        key = (stream, group, item)
        if key in self._stream_overlay:
            pending = self._stream_overlay[key]
            return None if pending is _DELETED else str(pending)
        if self.conn is not None:
            return await _stream_store.read_item(self.conn, stream, group, item)
        async with self._reader() as conn:
            return await _stream_store.read_item(conn, stream, group, item)

    async def stream_group(self, stream: str, group: str) -> list[tuple[str, str]]:
        """(id, JSON text) of a group's items, least recently changed first, own writes last."""
        self._check()
        if _unstorable(stream, group):
            return []
        if self.conn is not None:
            rows = await _stream_store.read_group(self.conn, stream, group)
        else:
            async with self._reader() as conn:
                rows = await _stream_store.read_group(conn, stream, group)
        items = {item: data for item, data, _version in rows}
        for (s, g, item), value in self._stream_overlay.items():
            if s != stream or g != group:
                continue
            items.pop(item, None)
            if value is not _DELETED:
                items[item] = value
        return list(items.items())

    # -- buffered writes ----------------------------------------------------------------------

    def set(self, group: str, key: str, value: Any) -> None:
        self._check()
        encoded = _encode(group, key, value)
        self.ops.append(StateOp("set", group, key, encoded))
        self._overlay[(group, key)] = encoded

    def delete(self, group: str, key: str) -> None:
        self._check()
        self.ops.append(StateOp("delete", group, key))
        self._overlay[(group, key)] = _DELETED

    def clear(self, group: str) -> None:
        self._check()
        self.ops.append(StateOp("clear", group))
        self._cleared.add(group)
        for g, key in [k for k in self._overlay if k[0] == group]:
            del self._overlay[(g, key)]

    def add_event(self, event: NewEvent) -> None:
        self._check()
        self.emits.append(event)

    def add_stream_op(self, op: StreamOp) -> None:
        self._check()
        self.stream_ops.append(op)
        if op.kind != "send":
            key = (op.stream, op.group, op.id or "")
            self._stream_overlay.pop(key, None)  # re-insert: the overlay keeps change order
            self._stream_overlay[key] = op.data if op.kind == "set" else _DELETED

    # -- atomic read-modify-write ---------------------------------------------------------------

    async def modify(self, group: str, key: str, fn: Callable[[Any], Any]) -> Any:
        """Apply `fn` to the current value under a lock and store what it returns."""
        self._check()
        conn = await self._transaction()
        raw = await _store.lock_state(conn, group, key)
        new_value = fn(None if raw is None else _json.loads(raw))
        encoded = _encode(group, key, new_value)
        await _store.apply_state_ops(conn, [StateOp("set", group, key, encoded)], self.now())
        return _json.loads(encoded)

    async def session(self) -> AsyncSession:
        """An ORM session inside this unit's transaction: its writes commit with the emits."""
        self._check()
        if self._session is None:
            conn = await self._transaction()
            self._session = AsyncSession(bind=conn, expire_on_commit=False)
        return self._session

    async def _transaction(self) -> AsyncConnection:
        if self.conn is None:
            conn = await self.engine.connect()
            try:
                await conn.begin()
                await self._flush(conn)
            except BaseException:
                await conn.close()
                raise
            self.conn = conn
        return self.conn

    async def _flush(self, conn: AsyncConnection) -> None:
        if self.ops:
            await _store.apply_state_ops(conn, self.ops, self.now())
            self.ops = []
            self._overlay.clear()
            self._cleared.clear()

    # -- the end ------------------------------------------------------------------------------

    @property
    def has_effects(self) -> bool:
        return bool(self.ops or self.emits or self.stream_ops or self.conn is not None)

    @property
    def tombstone_seconds(self) -> float:
        return self.stream_sink.tombstone_seconds if self.stream_sink is not None else 86_400.0

    def _published(self, changes: list[Change]) -> None:
        if changes and self.stream_sink is not None:
            self.stream_sink.committed(changes)

    async def commit(
        self, ack_token: str | None = None, *, handoff: LeaseOffer | None = None
    ) -> bool:
        """Apply everything in one transaction. With `ack_token`, the delivery is marked done in
        the same transaction, and nothing is applied if its lease was lost (returns False).
        `handoff`: this process's worker may take the emits' deliveries (settled here)."""
        with _store.settling(handoff):
            return await self._commit(ack_token, handoff)

    async def _commit(self, ack_token: str | None, handoff: LeaseOffer | None) -> bool:
        self.closed = True
        if not self.has_effects and ack_token is None:
            return True
        if self._only_sends() and ack_token is None and self.engine.dialect.name == "sqlite":
            # Ephemeral events alone need no transaction (and no SQLite write lock).
            self._published(_stream_store.custom_changes(self.stream_ops))
            return True
        if self.conn is None:
            # The usual case: nothing was written before the commit, one short transaction.
            try:
                if self.engine.dialect.name == "sqlite" and not self.stream_ops:
                    # Acks, state writes and emits alone: all on SQLite's driver.
                    async with driver_transaction(self.engine) as db:
                        self._apply_on_driver(db, ack_token, handoff)
                    return True
                async with write_transaction(self.engine) as conn:
                    changes = await self._apply(conn, ack_token, handoff)
            except _LeaseLost:
                return False
            self._published(changes)
            return True
        conn = self.conn  # its own transaction, open since `increment`, `update` or `session`
        try:
            try:
                changes = await self._apply(conn, ack_token, handoff)
            except _LeaseLost:
                await conn.rollback()
                return False
            await conn.commit()
            self._published(changes)
            return True
        except BaseException:
            await conn.rollback()
            raise
        finally:
            await self._close_session()
            await conn.close()
            self.conn = None

    async def _apply(
        self, conn: AsyncConnection, ack_token: str | None, handoff: LeaseOffer | None
    ) -> list[Change]:
        """Write everything inside `conn`'s transaction; the stream changes to publish."""
        now = self.now()
        if ack_token is not None and not await _store.ack(conn, [ack_token], now):
            raise _LeaseLost
        if self._session is not None:
            await self._session.flush()
        await self._flush(conn)
        await _store.insert_events(conn, self.emits, now, notify=True, offer=handoff)
        changes = await _stream_store.apply_stream_ops(
            conn, self.stream_ops, now, self.tombstone_seconds
        )
        await _stream_store.notify_changes(conn, changes, now)
        return changes

    def _apply_on_driver(
        self, db: sqlite3.Connection, ack_token: str | None, handoff: LeaseOffer | None
    ) -> None:
        """`_apply` for a unit with no stream writes, inside `driver_transaction`."""
        now = self.now()
        if ack_token is not None and not _store.ack_sqlite(db, [ack_token], now):
            raise _LeaseLost
        _store.apply_state_ops_sqlite(db, self.ops, now)
        _store.insert_events_sqlite(db, self.emits, now, handoff)

    def _only_sends(self) -> bool:
        return (
            bool(self.stream_ops)
            and all(op.kind == "send" for op in self.stream_ops)
            and not (self.ops or self.emits or self.conn is not None or self._session is not None)
        )

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def rollback(self) -> None:
        self.closed = True
        self.ops = []
        self.emits = []
        self.stream_ops = []
        self._stream_overlay.clear()
        await self._close_session()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.rollback()
            finally:
                await conn.close()


async def notify_new_work(conn: AsyncConnection) -> None:
    """Wake the workers of every instance when this transaction commits (Postgres NOTIFY;
    Postgres folds identical notifications of one transaction into one)."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(f"NOTIFY {WORK_CHANNEL}")


def _unstorable(*names: Any) -> bool:
    """A name no row can have: text with NUL, which Postgres cannot store (a read of it finds
    nothing instead of failing, on every database)."""
    return any(isinstance(name, str) and "\x00" in name for name in names)


def _encode(group: str, key: str, value: Any) -> str:
    if not isinstance(group, str) or not isinstance(key, str) or not group or not key:
        raise ValueError("state group and key must be non-empty strings")
    if _unstorable(group, key):
        raise ValueError("state group and key must not contain NUL characters")
    if len(group) > 255 or len(key) > 255:
        raise ValueError("state group and key are at most 255 characters")
    try:
        return _json.dumps(value)
    except TypeError as exc:
        raise TypeError(f"state value for {group}/{key} is not JSON: {exc}") from None
