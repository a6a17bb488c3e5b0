"""What recording traces, logs and metrics costs: API and worker throughput with it on and off.

"on"  = the defaults: every step run recorded (RECORD_RUNS) and written in batches, the
        Workbench's log buffer receiving every record, run counters and recent runs kept.
"off" = RECORD_RUNS=false and WORKBENCH_ENABLED=false.
Both log the same lines (INFO, JSON, to /dev/null): what differs is only the observability.

API:    `POST /ingest` (validated body, one log line, one emit) and `POST /echo` (the same
        without the emit: no database work, so recording is the largest share) under uvicorn,
        one worker, closed-loop keep-alive clients on loopback; rounds alternate off/on.
Worker: 10,000 pre-filled `item.ingested` deliveries (one log line, one state write each)
        drained by the embedded worker; rounds alternate, best of each.

    .venv/bin/python bench/observability.py [--seconds 5] [--events 10000] [--rounds 2]
        [--backends sqlite,postgres]

On a 2-core box the API figures are bound by the database round trips of each request (a few
ms), so the on/off difference drowns in noise; the "hot path" line measures what recording
adds to one step run directly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db import migrate  # noqa: E402
from app.runtime import Runtime, RuntimeSettings, configure_logging, discover  # noqa: E402
from app.runtime._db import create_engine  # noqa: E402
from app.runtime._schema import deliveries  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.workbench import Workbench  # noqa: E402
from bench.common import free_port, stop, wait_up  # noqa: E402

STEPS = ROOT / "bench" / "observability_steps"
PG_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MODES = {
    "off": {"RECORD_RUNS": "false", "WORKBENCH_ENABLED": "false"},
    "on": {"RECORD_RUNS": "true", "WORKBENCH_ENABLED": "true"},
}


@asynccontextmanager
async def database(backend: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            migrate(url)
            yield url
        return
    name = f"stepwise_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_SERVER.rsplit("/", 1)[0] + "/" + name
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the API ------------------------------------------------------------------------------------


async def drive(port: int, path: str, seconds: float, connections: int) -> tuple[float, int]:
    """Closed-loop keep-alive HTTP/1.1 POSTs (httpx itself tops out near 1,000 req/s)."""
    body = b'{"text": "hello observability"}'
    request = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def one_connection() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 202"):
                    done += 1
                else:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return done / (time.perf_counter() - start), errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reset(url: str) -> None:
    engine = create_engine(url, sqlite_synchronous="NORMAL")
    tables = "stepwise_deliveries, stepwise_events, stepwise_state, stepwise_runs"
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"TRUNCATE {tables}")  # no dead rows left behind
        else:
            for table in tables.split(", "):
                await conn.exec_driver_sql(f"DELETE FROM {table}")
    await engine.dispose()


async def api_round(
    url: str, mode: str, path: str, seconds: float, connections: int, quiet: bool = False
) -> tuple[float, float]:
    """(requests/s, server CPU microseconds per request)"""
    await reset(url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "STEPS_DIR": str(STEPS),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "SQLITE_SYNCHRONOUS": "NORMAL",
        **MODES[mode],
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_api_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_up(f"http://127.0.0.1:{port}/workbench/api/flows", timeout=20)
        await drive(port, path, 1.0, connections)  # warm up
        cpu0 = cpu_seconds(proc.pid)
        rps, errors = await drive(port, path, seconds, connections)
        cpu = (cpu_seconds(proc.pid) - cpu0) / max(1.0, rps * seconds) * 1e6
    finally:
        stop([proc])
    if not quiet:
        print(
            f"  POST {path:<8} {mode:<4} {rps:>9,.0f} req/s  {cpu:>7,.0f} us CPU/request"
            f"   errors: {errors}",
            flush=True,
        )
    return rps, cpu


# -- the worker ---------------------------------------------------------------------------------


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


async def worker_round(
    url: str, mode: str, events: int, quiet: bool = False
) -> tuple[float, float]:
    """(events/s, CPU microseconds per event of this process)"""
    on = mode == "on"
    await reset(url)
    engine = create_engine(url, sqlite_synchronous="NORMAL")
    runtime = Runtime(discover(STEPS), engine, settings=RuntimeSettings(record_runs=on))
    workbench = None
    if on:
        workbench = Workbench(
            runtime, Settings(database_url=url, steps_dir=STEPS, workbench_enabled=True)
        )
        await workbench.start()
    for offset in range(0, events, 500):
        n = min(500, events - offset)
        await runtime.emit_many([{"topic": "item.ingested", "data": {"text": "x" * 40}}] * n)
    start, cpu0 = time.perf_counter(), time.process_time()
    await runtime.start(worker=True)
    while await done_count(runtime) < events:
        await asyncio.sleep(0.01)
    rate = events / (time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / events * 1e6
    await runtime.stop()
    if workbench is not None:
        await workbench.stop()
    await engine.dispose()
    if not quiet:
        print(
            f"  worker         {mode:<4} {rate:>9,.0f} ev/s   {cpu:>7,.0f} us CPU/event", flush=True
        )
    return rate, cpu


# -- the hot path, alone -------------------------------------------------------------------------


async def hot_path_cost(url: str, n: int = 50_000) -> str:
    """Microseconds "on" adds to one step run outside the database: recording the run (the
    buffer, recent runs, counters), one log record through the Workbench's sink, and the run's
    share of the batched INSERT."""
    from app.runtime._recorder import StepRun

    engine = create_engine(url, sqlite_synchronous="NORMAL")
    runtime = Runtime(discover(STEPS), engine, settings=RuntimeSettings(record_runs=True))
    workbench = Workbench(runtime, Settings(database_url=url, steps_dir=STEPS))
    await workbench.start()
    record = {
        "event": "stored",
        "level": "info",
        "timestamp": "2026-01-01T00:00:00Z",
        "trace_id": "0" * 32,
        "step": "BenchStore",
        "id": "e" * 32,
    }
    start = time.perf_counter()
    for i in range(n):
        runtime.recorder.record(
            StepRun(
                "0" * 32, "BenchStore", "event", 1, time.time(), 1.5, "ok", None, "item.ingested", i
            )
        )
        workbench.hub.sink(record)
    memory = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    while runtime.recorder._buffer:
        await runtime.recorder.flush()
    stored = (time.perf_counter() - start) / n * 1e6
    await workbench.stop()
    await engine.dispose()
    return (
        f"hot path: {memory:.1f} us per run in memory (record + listeners + one log record),"
        f" {stored:.1f} us per run for its batched INSERT (in the background, once a second)"
    )


# -- main ---------------------------------------------------------------------------------------


def ratio_line(what: str, off: list[tuple[float, float]], on: list[tuple[float, float]]) -> str:
    """Medians of each mode: throughput, and CPU per operation (steadier on a busy box)."""
    rate_off = statistics.median(r for r, _ in off)
    rate_on = statistics.median(r for r, _ in on)
    cpu_off = statistics.median(c for _, c in off)
    cpu_on = statistics.median(c for _, c in on)
    return (
        f"{what:<22} throughput off {rate_off:>7,.0f}/s on {rate_on:>7,.0f}/s "
        f"({(1 - rate_on / rate_off) * 100:+5.1f}%)   CPU/op off {cpu_off:>5,.0f} us "
        f"on {cpu_on:>5,.0f} us ({(cpu_on / cpu_off - 1) * 100:+5.1f}%)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one API run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternate off/on this often")
    parser.add_argument("--backends", default="sqlite")
    opts = parser.parse_args()
    # The worker runs in this process: its logs go where the API's go, nowhere.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    configure_logging("INFO", "json")
    sys.stderr = sys.__stderr__
    summary: list[str] = []
    for backend in opts.backends.split(","):
        async with database(backend) as url:
            print(f"{backend}: {opts.rounds} round(s), alternating off/on", flush=True)
            # warm-up, not counted: imports, page cache, the first connections
            await api_round(url, "on", "/ingest", 1.0, opts.connections, quiet=True)
            await worker_round(url, "on", min(opts.events, 2000), quiet=True)
            runs: dict[str, dict[str, list[tuple[float, float]]]] = {
                k: {"off": [], "on": []} for k in ("/ingest", "/echo", "worker")
            }
            for _ in range(opts.rounds):
                for path in ("/ingest", "/echo"):
                    for mode in ("off", "on"):
                        runs[path][mode].append(
                            await api_round(url, mode, path, opts.seconds, opts.connections)
                        )
                for mode in ("off", "on"):
                    runs["worker"][mode].append(await worker_round(url, mode, opts.events))
            for what in ("/ingest", "/echo", "worker"):
                label = f"{backend} {'POST ' + what if what != 'worker' else 'worker'}"
                summary.append(ratio_line(label, runs[what]["off"], runs[what]["on"]))
            summary.append(f"{backend} " + await hot_path_cost(url))
    print(
        f"\nmedians of {opts.rounds} alternating rounds; the cost of recording is on vs off "
        "(target < 10%)"
    )
    print("\n".join(summary))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
