"""The procrastinate side of `bench/peers.py`: one task doing one INSERT (its emit -> start latency).

Configured from the environment by `bench/peers.py`, which starts the workers as
`python -m procrastinate --app=bench.peer_procrastinate.app worker ...` and defers from its own
process.
"""

from __future__ import annotations

import asyncio
import os
import time

import psycopg_pool
from procrastinate import App, PsycopgConnector

CONCURRENCY = int(os.environ.get("PEERS_PROCRASTINATE_CONCURRENCY", "4"))

# procrastinate's own pool: its LISTEN connection plus fetch/finish for each concurrent job
app = App(
    connector=PsycopgConnector(
        conninfo=os.environ.get("PEERS_PG_URL", ""),
        min_size=CONCURRENCY + 2,
        max_size=CONCURRENCY + 2,
    )
)

_pool: psycopg_pool.AsyncConnectionPool | None = None
_pool_lock = asyncio.Lock()


async def _db() -> psycopg_pool.AsyncConnectionPool:
    global _pool
    if _pool is not None:
        return _pool
    async with _pool_lock:
        if _pool is not None:
            return _pool
        pool = psycopg_pool.AsyncConnectionPool(
            os.environ["PEERS_PG_URL"],
            min_size=CONCURRENCY,
            max_size=CONCURRENCY,
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open(wait=True)
        _pool = pool
        return pool


@app.task(name="peers.record")
async def record(t: float) -> None:
    latency_ms = (time.time() - t) * 1000
    async with (await _db()).connection() as conn:
        await conn.execute(
            "INSERT INTO peers_jobs (latency_ms, pid) VALUES (%s, %s)", (latency_ms, os.getpid())
        )
