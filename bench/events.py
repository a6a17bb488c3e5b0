"""End-to-end events/s and emit -> handler-start latency, on SQLite and Postgres.

For each backend, with one and two worker processes (`python -m app worker`):
  throughput: 10,000 events emitted as fast as possible (batches of 500), timed until the last
              delivery is done;
  latency:    a steady stream of events at half that rate (or --rate) for a few seconds, each
              emit taking what came due while the previous one ran, each handler storing
              (start - emit) in ctx.state; p50 and p99.
SQLite's embedded mode (worker in the emitting process, woken directly) is measured too.
With --peers, the same 10,000-job workload on Celery + Redis and on procrastinate, in this run.

    .venv/bin/python bench/events.py [--events 10000] [--backends sqlite,postgres] [--peers]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from sqlalchemy import func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db import migrate  # noqa: E402
from app.runtime import Runtime, RuntimeSettings, discover  # noqa: E402
from app.runtime._db import create_engine  # noqa: E402
from app.runtime._schema import deliveries  # noqa: E402
from bench.common import latency_figures, steady_stream, stop  # noqa: E402
from bench.common import line as figure_line  # noqa: E402

STEPS = ROOT / "bench" / "bench_steps"
PG_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def database(backend: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            migrate(url)
            yield url
        return
    name = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    admin = PG_SERVER.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_workers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "STEPS_DIR": str(STEPS),
        "LOG_LEVEL": "WARNING",
        "RECORD_RUNS": "true",
        "SQLITE_SYNCHRONOUS": SQLITE_SYNCHRONOUS,
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "app", "worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


async def done_count(runtime: Runtime) -> int:
    async with runtime.read_connection() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.status == "done")
                )
            ).scalar_one()
        )


async def wait_done(runtime: Runtime, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while await done_count(runtime) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {await done_count(runtime)} of {expected} done in {timeout}s")
        await asyncio.sleep(0.02)


async def reset(runtime: Runtime) -> None:
    async with runtime.engine.begin() as conn:
        for table in ("stepwise_deliveries", "stepwise_events", "stepwise_state", "stepwise_runs"):
            await conn.execute(text(f"DELETE FROM {table}"))


async def throughput(runtime: Runtime, events: int) -> float:
    await reset(runtime)
    start = time.perf_counter()
    for offset in range(0, events, 500):
        n = min(500, events - offset)
        await runtime.emit_many([{"topic": "bench.tick", "data": {"t": time.time()}}] * n)
    await wait_done(runtime, events)
    return events / (time.perf_counter() - start)


# The latency run's least time between two emits (--tick; see bench.common.steady_stream).
TICK = 0.0
# SQLite's `synchronous`: FULL (a disk sync a commit, the strict setting) unless --sqlite-synchronous
# NORMAL (the project's default: WAL, safe from a process crash, not from a power cut).
SQLITE_SYNCHRONOUS = "FULL"
# The latency run's rate in events/s (--rate); 0: half the throughput just measured.
RATE = 0.0


async def latency(runtime: Runtime, rate: float, seconds: float) -> tuple[float, float, str]:
    await reset(runtime)

    async def send(n: int) -> None:
        await runtime.emit_many([{"topic": "bench.tick", "data": {"t": time.time()}}] * n)

    sent, achieved = await steady_stream(rate, seconds, send, TICK)
    await wait_done(runtime, sent)
    async with runtime.read_connection() as conn:
        values = [
            float(v)
            for (v,) in await conn.execute(
                text("SELECT value FROM stepwise_state WHERE group_id = 'bench'")
            )
        ]
    return latency_figures(values, achieved, RATE)


async def run_backend(
    backend: str, events: int, worker_counts: list[int], seconds: float
) -> list[str]:
    lines = []
    async with database(backend) as url:
        engine = create_engine(url, sqlite_synchronous=SQLITE_SYNCHRONOUS)
        producer = Runtime(discover(STEPS), engine)
        if backend == "sqlite":
            # embedded: the worker runs in the emitting process and is woken directly
            embedded = Runtime(discover(STEPS), engine, settings=RuntimeSettings())
            await embedded.start(worker=True)
            # As the dev process does once started (app/main.py's lifespan): the heap that
            # imports and start-up built is kept out of the collector's full passes.
            gc.freeze()
            rate = await throughput(embedded, events)
            p50, p99, how = await latency(embedded, RATE or rate / 2, seconds)
            await embedded.stop()
            gc.unfreeze()
            lines.append(figure_line(backend, "embedded", rate, p50, p99, how))
        for count in worker_counts:
            procs = start_workers(url, count)
            try:
                await asyncio.sleep(2.0)  # the workers are up
                rate = await throughput(producer, events)
                p50, p99, how = await latency(producer, RATE or rate / 2, seconds)
            finally:
                stop(procs)
            lines.append(figure_line(backend, f"{count} worker process(es)", rate, p50, p99, how))
        await engine.dispose()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--workers", default="1,2", help='worker processes, e.g. "1,2"; "" for none'
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument(
        "--peers", action="store_true", help="also run Celery+Redis and procrastinate"
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=TICK,
        help="least seconds between two emits in the latency run (0: as soon as one returns)",
    )
    parser.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events/s in the latency run (default: half load)"
    )
    opts = parser.parse_args()
    globals()["TICK"] = opts.tick
    globals()["RATE"] = opts.rate
    globals()["SQLITE_SYNCHRONOUS"] = opts.sqlite_synchronous
    counts = [int(c) for c in opts.workers.split(",") if c.strip()]  # "": embedded only
    if opts.peers:
        from bench import peers

        peers.preflight()  # before the Stepwise runs: bench group installed, Redis db free
    results: list[str] = []
    for backend in opts.backends.split(","):
        results += await run_backend(backend, opts.events, counts, opts.seconds)
        for line in results[-(len(counts) + (backend == "sqlite")) :]:
            print(line, flush=True)
    if opts.peers:
        await peers.run(opts.events, results, opts.seconds)


if __name__ == "__main__":
    asyncio.run(main())
