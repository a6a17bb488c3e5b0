"""The SQLite engine's transactions under cancellation: a task cancelled anywhere in a write
transaction (a worker stopping mid-claim, a request cut off) must never leave the write lock
held by a pooled connection."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.runtime._db import create_engine, write_transaction


def _lock_is_free(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        probe.close()


@pytest.mark.parametrize("opening", ["engine.begin", "write_transaction"])
async def test_a_write_transaction_cancelled_at_any_point_leaves_the_lock_free(
    tmp_path: Path, opening: str
) -> None:
    path = tmp_path / "cancel.db"
    engine = create_engine(f"sqlite:///{path}")
    begin: Callable[[], Any] = (
        engine.begin if opening == "engine.begin" else lambda: write_transaction(engine)
    )
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (tx INTEGER, x INTEGER)"))

    async def transaction(tx: int) -> None:
        async with begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:tx, 1)"), {"tx": tx})
            await conn.execute(text("INSERT INTO t VALUES (:tx, 2)"), {"tx": tx})

    try:
        # Cancel after 0, 1, 2, ... loop turns: every place the transaction can be suspended.
        for turns in range(10):
            task = asyncio.create_task(transaction(turns))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert _lock_is_free(path), f"write lock still held after a cancel at turn {turns}"
        async with engine.connect() as conn:
            kept = dict((await conn.execute(text("SELECT tx, count(*) FROM t GROUP BY tx"))).all())
        assert set(kept.values()) <= {2}, kept  # all or nothing: no half transaction was kept
        assert kept  # the later turns let transactions finish
        assert 0 not in kept  # cancelled before it began: nothing
    finally:
        await engine.dispose()
