"""Engines for SQLite and Postgres with the transaction behaviour the runtime relies on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._sqlite import inline_creator

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
        return engine
    kwargs["pool_size"] = pool_size
    kwargs["max_overflow"] = pool_size
    kwargs["pool_reset_on_return"] = None
    kwargs["connect_args"] = {"application_name": f"stepwise-{os.getpid()}"}
    return create_async_engine(parsed, **kwargs)


def _install_sqlite_hooks(engine: AsyncEngine, synchronous: str) -> None:
    synchronous = synchronous.upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("sqlite synchronous must be NORMAL or FULL")

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "immediate")
        if mode == "immediate":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif mode == "deferred":
            conn.exec_driver_sql("BEGIN")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"
