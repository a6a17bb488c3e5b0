"""SQLite on the event loop's own thread: one connection object that looks like aiosqlite's.

aiosqlite runs every call in a helper thread; through SQLAlchemy a single statement costs several
thread hand-offs, and a transaction around a dozen. SQLite itself answers in microseconds, so
the hand-offs, not the database, set the pace: the write lock is held across all of them, and
every other writer queues behind it. Here the calls run inline instead (a commit with
`synchronous=FULL` is a fraction of a millisecond on a local disk), and the only call that
could block — waiting for another connection's write lock — never blocks: the connection's
busy timeout is zero and `BEGIN` is retried with `asyncio.sleep` until the configured timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# A write lock held by another process is tried for again every millisecond (the loop's timer
# resolution): SQLite keeps no queue of waiters, and a writer that backed off further lost the
# lock to one writing every few milliseconds (an API emitting a steady stream, against a worker
# process backing off to 20 ms: p50 2.2 s at 5,400 events/s; with 1 ms, 14 ms).
_RETRY_EVERY = 0.001


def _locked(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "database is locked" in message or "database is busy" in message


class InlineCursor:
    """The coroutine cursor API SQLAlchemy's aiosqlite dialect expects, run inline."""

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner._conn.cursor()
        self.arraysize = 1

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        await self._owner._run(
            lambda: (
                self._cursor.execute(sql)
                if parameters is None
                else self._cursor.execute(sql, parameters)
            )
        )
        return self

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> InlineCursor:
        rows = list(seq)
        await self._owner._run(lambda: self._cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size or self.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def setinputsizes(self, *sizes: Any) -> None:
        return None


class _ImmediateQueue:
    """Stands in for aiosqlite's internal queue (used by SQLAlchemy to set isolation_level)."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineConnection:
    """A sqlite3 connection with aiosqlite's coroutine API, run on the calling thread."""

    def __init__(self, database: str, lock_timeout: float) -> None:
        # isolation_level=None: we issue BEGIN ourselves; timeout=0: never block on a lock.
        self._conn = sqlite3.connect(
            database, isolation_level=None, timeout=0, check_same_thread=False
        )
        self._lock_timeout = lock_timeout
        self._tx = _ImmediateQueue()

    @property
    def _connection(self) -> sqlite3.Connection | None:
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def _run(self, call: Callable[[], Any], *, pause: bool = True) -> Any:
        """Run a statement; a lock held elsewhere is waited for without blocking the loop.

        Only a statement that opens no transaction of its own can meet a lock here (a BEGIN, or
        a write outside any transaction): retrying it is safe because it did nothing.
        """
        deadline = None
        while True:
            try:
                result = call()
                # Yield once, as a driver waiting on a socket or a thread would: a loop of
                # statements must not starve the other tasks (a stream's readers, say).
                if pause:
                    await asyncio.sleep(0)
                return result
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or self._conn.in_transaction:
                    raise
                now = time.monotonic()
                deadline = deadline or now + self._lock_timeout
                if now >= deadline:
                    raise
                await asyncio.sleep(_RETRY_EVERY)

    async def begin(self, statement: str, *, pause: bool = True) -> None:
        """BEGIN without a cursor (waiting, without blocking, for a lock held elsewhere).
        `pause=False`: no loop turn once the lock is ours (the caller took one before)."""
        await self._run(lambda: self._conn.execute(statement), pause=pause)

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    def commit_now(self) -> None:
        """COMMIT from synchronous code (`_db.write_transaction`)."""
        self._conn.commit()

    def rollback_now(self) -> None:
        """ROLLBACK from synchronous code; nothing to do outside a transaction, or when the
        connection was closed already (SQLAlchemy invalidates one whose statement was
        cancelled: closing it ended the transaction)."""
        try:
            open_transaction = self._conn.in_transaction
        except sqlite3.ProgrammingError:
            return
        if open_transaction:
            self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


def driver_connection(conn: Any) -> sqlite3.Connection:
    """The sqlite3 connection under an AsyncConnection of our engine, for hot paths inside a
    transaction that already holds the write lock (no wait can happen), where SQLAlchemy's
    per-statement work costs more than SQLite's own. Errors are the caller's to mark
    (`_db.own_errors`)."""
    inline = conn.sync_connection.connection.driver_connection
    if not isinstance(inline, InlineConnection) or not inline._conn.in_transaction:
        raise RuntimeError("driver_connection: not an open transaction of a Stepwise engine")
    return inline._conn


def inline_creator(database: str, lock_timeout: float = 30.0) -> Callable[[], Any]:
    """An `async_creator` for SQLAlchemy's sqlite+aiosqlite dialect."""

    async def connect() -> InlineConnection:
        return InlineConnection(database, lock_timeout)

    return connect
