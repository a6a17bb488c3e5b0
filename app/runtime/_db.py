"""Engines for SQLite and Postgres with the transaction behaviour the runtime relies on."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from ._sqlite import InlineConnection, driver_connection, inline_creator

# Execution option: `begin` on SQLite. "immediate" (the default) takes the write lock at BEGIN so
# a read-then-write transaction can never fail half-way; "none" runs without a transaction
# (single autocommit reads).
SQLITE_BEGIN = "stepwise_sqlite_begin"


def normalize_url(url: str | URL) -> URL:
    """Map plain `sqlite:///` and `postgresql://` URLs onto the async drivers we ship."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string()!r}: use sqlite or postgresql"
    )


def sync_url(url: str | URL) -> URL:
    """The same database through a synchronous driver (for Alembic)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite")
    return parsed


def create_engine(
    url: str | URL,
    *,
    sqlite_synchronous: str = "NORMAL",
    pool_size: int = 10,
    echo: bool = False,
) -> AsyncEngine:
    """An async engine: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or Postgres via psycopg 3."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError(
                "use a SQLite file (sqlite:///path/to/db): memory databases are per connection"
            )
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Statements run on the loop's thread (see _sqlite.py); lock waits never block it.
        kwargs["async_creator"] = inline_creator(database, lock_timeout=30.0)
        # Every path commits or rolls back itself; the pool need not roll back again on return.
        kwargs["pool_reset_on_return"] = None
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
        engine = create_async_engine(parsed, **kwargs)
        _install_sqlite_hooks(engine, sqlite_synchronous)
        _install_writer(engine, database, sqlite_synchronous)
        _mark_own_errors(engine)
        return engine
    kwargs["pool_size"] = pool_size
    kwargs["max_overflow"] = pool_size
    kwargs["pool_reset_on_return"] = None
    kwargs["connect_args"] = {"application_name": f"stepwise-{os.getpid()}"}
    engine = create_async_engine(parsed, **kwargs)
    _mark_own_errors(engine)
    return engine


def _sqlite_pragmas(synchronous: str) -> list[str]:
    synchronous = synchronous.upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("sqlite synchronous must be NORMAL or FULL")
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA foreign_keys=ON",
    ]


def _install_sqlite_hooks(engine: AsyncEngine, synchronous: str) -> None:
    pragmas = _sqlite_pragmas(synchronous)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "immediate")
        if mode in ("immediate", "deferred"):
            # Straight to our driver (InlineConnection.begin), not through SQLAlchemy's execute.
            inline: Any = conn.connection.driver_connection
            # No loop turn once BEGIN has run (pause=False): a task cancelled there would
            # leave this event with the transaction open on the driver and unknown to
            # SQLAlchemy (it only cleans up after a failing BEGIN of its own), and the pooled
            # connection would hold the write lock for every other writer.
            statement = "BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN"
            await_only(inline.begin(statement, pause=False))


@contextlib.asynccontextmanager
async def one_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Postgres: a connection in autocommit, for a write that is one statement (atomic by
    itself): one round trip instead of three (BEGIN, the statement, COMMIT)."""
    async with engine.connect() as conn, autocommit(conn):
        yield conn


@contextlib.asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for reads outside any transaction: on SQLite with no BEGIN, on
    Postgres in autocommit. A checkout cancelled half-way (a worker stopping) is given back to
    the pool by the `async with`, not left to the garbage collector."""
    if engine.dialect.name == "sqlite":
        async with without_begin(engine).connect() as conn:
            yield conn
    else:
        async with one_statement(engine) as conn:
            yield conn


@contextlib.asynccontextmanager
async def autocommit(conn: AsyncConnection) -> AsyncIterator[None]:
    """Postgres: `conn` in autocommit for the block, set on psycopg's connection itself.

    SQLAlchemy's `isolation_level="AUTOCOMMIT"` does the same through its greenlet layer, once
    at checkout and again to reset it at return: about 80 us a use, as much as a short
    statement's round trip. Here it is two attribute changes (psycopg checks that no
    transaction is open; none is, and none can be opened meanwhile, since psycopg issues no
    BEGIN in autocommit). A connection whose mode cannot be put back is not pooled again.
    """
    driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    await driver.set_autocommit(True)
    try:
        yield
    finally:
        if conn.invalidated or driver.closed:
            pass  # not pooled again: nothing to put back
        elif driver.broken:
            await conn.invalidate()
        else:
            try:
                await driver.set_autocommit(False)
            except BaseException:
                await conn.invalidate()
                raise


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction, as `engine.begin()`; on SQLite its BEGIN IMMEDIATE and COMMIT go
    straight to the driver.

    SQLAlchemy's own begin and commit cost two greenlet spawns and a loop turn on top of SQLite's
    microseconds (about 65 us of a 110 us empty transaction on an idle loop, more when the code
    is cold); on the emit's path that was a quarter of the time. The connection's statements go
    through SQLAlchemy as usual, inside the transaction (their autobegin issues nothing). As in
    `driver_transaction`, no loop turn follows the commit.
    """
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    async with without_begin(engine).connect() as conn:
        inline: InlineConnection = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr,assignment]
        with own_errors():
            await inline.begin("BEGIN IMMEDIATE", pause=False)
        try:
            yield conn
            with own_errors():
                inline.commit_now()
        except BaseException:
            inline.rollback_now()
            raise


class _Writer:
    """SQLite: the engine's own write connection, outside its pool (see `driver_transaction`)."""

    def __init__(self, database: str, synchronous: str) -> None:
        self._database = database
        self._pragmas = _sqlite_pragmas(synchronous)
        self._conn: InlineConnection | None = None
        self.busy = False

    async def connection(self) -> InlineConnection:
        if self._conn is None:
            conn = InlineConnection(self._database, lock_timeout=30.0)
            try:
                for pragma in self._pragmas:  # waiting, as BEGIN does, for a lock held elsewhere
                    await conn.execute(pragma)
            except BaseException:
                conn.stop()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.stop()


_WRITER = "_stepwise_writer"


def _install_writer(engine: AsyncEngine, database: str, synchronous: str) -> None:
    writer = _Writer(database, synchronous)
    engine.sync_engine.__dict__[_WRITER] = writer

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def _on_dispose(_engine: Any) -> None:
        writer.close()  # opened again by the next transaction, as the pool's connections are


@contextlib.asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[sqlite3.Connection]:
    """SQLite: a write transaction whose body only talks to the driver and never awaits (an
    emit's INSERTs; a step's or a group's acks, state writes and emits), on a connection the
    engine keeps for these transactions, outside its pool.

    A pooled connection's checkout and return through SQLAlchemy cost about 0.2 ms of a
    30-event emit's 1.3 on this 2-core box (two greenlet spawns, the pool's bookkeeping), more
    than its INSERTs. One transaction uses the connection at a time; one that finds it in use
    (another waits for the write lock on it) takes a pooled connection, as `write_transaction`.
    The lock held elsewhere is waited for as there, and a body or a commit that fails rolls
    back.

    No loop turn follows the commit (a cancel there would hide from the caller a transaction
    that did commit, and what it decided: deliveries handed to this process's worker, say).
    A caller that may write in a loop yields itself once it has acted on the outcome.
    """
    writer: _Writer | None = engine.sync_engine.__dict__.get(_WRITER)
    if writer is None or writer.busy:
        async with write_transaction(engine) as conn:
            yield driver_connection(conn)
        return
    writer.busy = True
    try:
        with own_errors():
            inline = await writer.connection()
            await inline.begin("BEGIN IMMEDIATE", pause=False)
        try:
            yield inline._conn
            with own_errors():
                inline.commit_now()
        except BaseException:
            inline.rollback_now()
            raise
    finally:
        writer.busy = False


def without_begin(engine: AsyncEngine) -> AsyncEngine:
    """SQLite: the engine's view whose connections issue no BEGIN of their own (for reads
    outside any transaction, and `write_transaction`); cached on the engine, sharing its pool.
    Cheaper than setting the option on each connection (a greenlet hop a use)."""
    view: AsyncEngine | None = engine.sync_engine.__dict__.get("_stepwise_without_begin")
    if view is None:
        view = engine.execution_options(**{SQLITE_BEGIN: "none"})
        engine.sync_engine.__dict__["_stepwise_without_begin"] = view
    return view


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


# -- the database's own failures ------------------------------------------------------------------

Outage = Literal["unavailable", "storage"]

# Set on every exception raised by an engine of ours: a handler's own connection to another
# service failing is the handler's failure, not the application database's outage.
_OWN = "_stepwise_database_error"

# SQLite's primary result codes (an extended code carries its primary code in the low byte).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_IOERR = 5, 6, 7, 10
_SQLITE_FULL, _SQLITE_CANTOPEN = 13, 14
_SQLITE_UNAVAILABLE = {_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_IOERR, _SQLITE_CANTOPEN}
_SQLITE_UNAVAILABLE_TEXT = ("database is locked", "unable to open database file", "disk i/o error")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def own_errors() -> Iterator[None]:
    """Around statements sent to the driver directly (not through the engine): their errors are
    the application database's own, as the engine would have marked them."""
    try:
        yield
    except (sqlite3.Error, psycopg.Error) as exc:
        setattr(exc, _OWN, True)
        raise


async def pg_rows(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Postgres: one hot statement straight on psycopg, its rows as tuples.

    SQLAlchemy's execute and result rows cost about 0.4 ms around a 16-event emit or a claim
    (measured on this 2-core box), on the path from an emit to its handler. What SQLAlchemy
    would do on failure is done here: errors are marked as the database's own, and a connection
    that broke, or whose statement was cut off (cancelled), is invalidated instead of pooled.
    """
    driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    try:
        with own_errors():
            cursor = await driver.execute(sql, params)
            return list(await cursor.fetchall())
    except BaseException as exc:
        if not isinstance(exc, Exception) or driver.broken or driver.closed:
            await conn.invalidate()
        raise


def _mark_own_errors(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "handle_error")
    def _mark(context: ExceptionContext) -> None:
        for exc in (context.original_exception, context.sqlalchemy_exception):
            if exc is not None:
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, _OWN, True)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (SQLAlchemy's `.orig`), its causes and contexts, and the
    members of exception groups; each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)


def database_outage(exc: BaseException) -> Outage | None:
    """Whether `exc` is the application database failing rather than the code: `"unavailable"`
    (cannot connect, connection lost, shutting down, busy, no pooled connection in time) or
    `"storage"` (disk full). None for anything else: a bad statement or a broken constraint is a
    bug, and a handler's own connection to another service failing is the handler's failure."""
    unavailable = False
    for cause in _causes(exc):
        if isinstance(cause, sa_exc.TimeoutError):
            unavailable = True  # only SQLAlchemy's pools raise it: no connection in time
        if not getattr(cause, _OWN, False):
            continue
        if isinstance(cause, psycopg.errors.DiskFull):
            return "storage"
        if isinstance(cause, sqlite3.Error):
            code = (getattr(cause, "sqlite_errorcode", 0) or 0) & 0xFF
            message = str(cause).lower()
            if code == _SQLITE_FULL or "database or disk is full" in message:
                return "storage"
            if code in _SQLITE_UNAVAILABLE or any(m in message for m in _SQLITE_UNAVAILABLE_TEXT):
                unavailable = True
        elif isinstance(cause, OSError) and cause.errno in _NO_SPACE:
            return "storage"
        elif isinstance(cause, psycopg.OperationalError | ConnectionError):
            unavailable = True  # refused, reset, shutting down, too many connections, timeout
        elif isinstance(cause, sa_exc.DBAPIError):
            unavailable = unavailable or cause.connection_invalidated
    return "unavailable" if unavailable else None
