"""A unit of work: the state writes and emits of one step invocation, applied all or nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from . import _json, _store
from ._db import SQLITE_BEGIN
from ._store import NewEvent, StateOp

_DELETED = object()


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

    # -- reads ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.closed:
            raise UnitClosedError("this step invocation is over; its context can no longer be used")

    async def get(self, group: str, key: str) -> Any:
        self._check()
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

    def _reader(self) -> Any:
        return _ReadConnection(self.engine)

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
        return bool(self.ops or self.emits or self.conn is not None)

    async def commit(self, ack_token: str | None = None) -> bool:
        """Apply everything in one transaction. With `ack_token`, the delivery is marked done in
        the same transaction, and nothing is applied if its lease was lost (returns False)."""
        self.closed = True
        if not self.has_effects and ack_token is None:
            return True
        conn = self.conn
        if conn is None:
            conn = await self.engine.connect()
            await conn.begin()
        try:
            now = self.now()
            if ack_token is not None and not await _store.ack(conn, [ack_token], now):
                await conn.rollback()
                return False
            if self._session is not None:
                await self._session.flush()
            await self._flush(conn)
            await _store.insert_events(conn, self.emits, now)
            if self.emits:
                await notify_new_work(conn)
            await conn.commit()
            return True
        except BaseException:
            await conn.rollback()
            raise
        finally:
            await self._close_session()
            await conn.close()
            self.conn = None

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def rollback(self) -> None:
        self.closed = True
        self.ops = []
        self.emits = []
        await self._close_session()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.rollback()
            finally:
                await conn.close()


class _ReadConnection:
    """A pooled connection for a single read outside any transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        conn = await self._engine.connect()
        if conn.dialect.name == "sqlite":
            conn = await conn.execution_options(**{SQLITE_BEGIN: "none"})
        else:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        self._conn = conn
        return conn

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()


async def notify_new_work(conn: AsyncConnection) -> None:
    """Wake the workers of every instance when this transaction commits (Postgres NOTIFY;
    Postgres folds identical notifications of one transaction into one)."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("NOTIFY stepwise_work")


def _encode(group: str, key: str, value: Any) -> str:
    if not isinstance(group, str) or not isinstance(key, str) or not group or not key:
        raise ValueError("state group and key must be non-empty strings")
    if len(group) > 255 or len(key) > 255:
        raise ValueError("state group and key are at most 255 characters")
    try:
        return _json.dumps(value)
    except TypeError as exc:
        raise TypeError(f"state value for {group}/{key} is not JSON: {exc}") from None
