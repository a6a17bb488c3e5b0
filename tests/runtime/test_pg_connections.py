"""Postgres connections after the runtime's shortcuts: a one-statement write switches psycopg's
autocommit itself, and the hot statements go straight to psycopg. A pooled connection must come
back exactly as a transaction expects it (autocommit off), or not come back at all."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from app.runtime._db import create_engine, one_statement, pg_rows


def _driver(conn: Any) -> Any:
    return conn.sync_connection.connection.driver_connection


async def test_a_one_statement_connection_comes_back_transactional(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE shortcut_probe (x integer)"))
        async with one_statement(engine) as conn:
            driver = _driver(conn)
            assert driver.autocommit is True
            assert await pg_rows(conn, "INSERT INTO shortcut_probe VALUES (1) RETURNING x", {})
        assert driver.autocommit is False  # put back before the pool took it
        # The same pooled connection, in a transaction that fails: nothing of it is kept.
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                assert _driver(conn) is driver
                await conn.execute(text("INSERT INTO shortcut_probe VALUES (2)"))
                raise RuntimeError("the transaction fails")
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT x FROM shortcut_probe ORDER BY x"))).all()
        assert [x for (x,) in kept] == [1]
    finally:
        await engine.dispose()


async def test_a_statement_cut_off_midway_is_not_pooled_again(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1)
    seen: list[Any] = []

    async def slow() -> None:
        async with one_statement(engine) as conn:
            seen.append(_driver(conn))
            await pg_rows(conn, "SELECT pg_sleep(5)", {})

    try:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert seen and seen[0].closed  # invalidated: its answer would still be on the wire
        async with engine.connect() as conn:
            assert _driver(conn) is not seen[0]
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            assert _driver(conn).autocommit is False
    finally:
        await engine.dispose()


async def test_errors_of_the_shortcut_are_the_databases_own(pg_url: str) -> None:
    from app.runtime._db import _OWN

    engine = create_engine(pg_url)
    try:
        async with one_statement(engine) as conn:
            with pytest.raises(psycopg.errors.UndefinedTable) as caught:
                await pg_rows(conn, "SELECT * FROM no_such_table", {})
            assert getattr(caught.value, _OWN, False)
            # The connection is still good after a statement's own error.
            assert await pg_rows(conn, "SELECT 1", {}) == [(1,)]
    finally:
        await engine.dispose()
