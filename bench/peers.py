"""The same 10,000-job workload as `bench/events.py`, on Celery 5 + Redis and on procrastinate.

Each peer runs one task doing one INSERT into a table of a fresh Postgres database (the task's
emit -> start latency, in ms), like Stepwise's benchmark handler and its one state write, with
two worker processes:
  celery         Celery + Redis (a Redis database of its own, default db 7, flushed afterwards),
                 `--pool solo` workers without gossip/mingle/heartbeat, no result backend,
                 prefetch multiplier PEERS_CELERY_PREFETCH; the producer calls `apply_async`
                 per job on one held producer connection.
  procrastinate  procrastinate workers (`python -m procrastinate ... worker`, LISTEN/NOTIFY on,
                 concurrency PEERS_PROCRASTINATE_CONCURRENCY, an async task); the producer uses
                 `batch_defer_async` in batches of 500 (as bench/events.py emits).
Measured as in bench/events.py: throughput = 10,000 jobs emitted as fast as the producer goes,
timed until the table holds 10,000 rows; latency = a steady stream of jobs at half that rate for
a few seconds (bench.common.steady_stream), p50/p99 of the recorded emit -> start latencies. Then the ratios of Stepwise's Postgres
two-worker events/s (same run) to each peer's.

    .venv/bin/python bench/events.py --peers          # Stepwise, then the peers and the ratios
    .venv/bin/python bench/peers.py [--events 10000]  # the peers alone (no ratios)

Needs the `bench` dependency group (`uv sync --group bench`), Redis and Postgres on 127.0.0.1.
Everything is bounded in time; worker processes are terminated (killed if need be, and by the
kernel if this process dies) and the databases dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import latency_figures, steady_stream  # noqa: E402
from bench.common import line as figure_line  # noqa: E402

PG_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_SERVER = PG_SERVER.replace("postgresql+psycopg", "postgresql")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
WORKERS = 2
CELERY_PREFETCH = int(os.environ.get("PEERS_CELERY_PREFETCH", "4"))
PROCRASTINATE_CONCURRENCY = int(os.environ.get("PEERS_PROCRASTINATE_CONCURRENCY", "4"))
BATCH = 500
PHASE_TIMEOUT = 300.0  # seconds, for any one wait
TARGETS = {"celery": 3.0, "procrastinate": 5.0}

Send = Callable[[int], Awaitable[None]]  # emits n jobs, each carrying its emit time


class PeerError(RuntimeError):
    pass


def preflight() -> None:
    """Fail fast (before any Stepwise run) when the peers cannot run."""
    try:
        import celery  # noqa: F401
        import procrastinate  # noqa: F401
        import redis
    except ImportError as exc:
        raise SystemExit(
            f"--peers needs the bench dependency group: uv sync --group bench ({exc})"
        ) from None
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        size = client.dbsize()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {REDIS_URL}: {exc}") from None
    finally:
        client.close()
    if size:
        raise SystemExit(
            f"Redis {REDIS_URL} holds {size} keys: the benchmark flushes the database it uses,"
            " so it needs an empty one (set BENCH_REDIS_URL=redis://127.0.0.1:6379/<free db>)"
        )


def _flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.flushdb()  # our own database number only (checked empty by preflight)
    finally:
        client.close()


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    name = f"peers_bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(PG_SERVER, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_SERVER.rsplit("/", 1)[0] + "/" + name
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE peers_jobs (id bigserial PRIMARY KEY,"
                " latency_ms double precision NOT NULL, pid integer NOT NULL)"
            )
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(PG_SERVER, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _die_with_parent() -> None:
    """In the child: SIGKILL it if this process dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Workers:
    def __init__(self, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
        self.procs = procs
        self.logs = logs

    def check(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise PeerError(f"worker exited with {proc.returncode}:\n{tail}")


@contextmanager
def workers(commands: list[list[str]], env: dict[str, str], log_dir: Path) -> Iterator[Workers]:
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i, command in enumerate(commands):
            log = log_dir / f"worker-{uuid.uuid4().hex[:6]}-{i}.log"
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent,
                    )
                )
            logs.append(log)
        yield Workers(procs, logs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def _scalar(conn: psycopg.AsyncConnection, sql: str) -> int:
    row = await (await conn.execute(sql)).fetchone()
    assert row is not None
    return int(row[0])


async def wait_rows(
    conn: psycopg.AsyncConnection, expected: int, procs: Workers, timeout: float = PHASE_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while (done := await _scalar(conn, "SELECT count(*) FROM peers_jobs")) < expected:
        procs.check()
        if time.monotonic() > deadline:
            raise PeerError(f"only {done} of {expected} jobs done in {timeout:.0f}s")
        await asyncio.sleep(0.02)


async def reset(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("TRUNCATE peers_jobs")


async def warm_up(conn: psycopg.AsyncConnection, send: Send, procs: Workers) -> None:
    """Send a trickle of jobs until every worker has run one, then clear the table."""
    deadline = time.monotonic() + 60
    sent = 0
    while await _scalar(conn, "SELECT count(DISTINCT pid) FROM peers_jobs") < len(procs.procs):
        procs.check()
        if time.monotonic() > deadline:
            raise PeerError("the workers did not all start within 60s")
        await send(10)
        sent += 10
        await asyncio.sleep(0.05)
    await wait_rows(conn, sent, procs)
    await reset(conn)


async def throughput(
    conn: psycopg.AsyncConnection, send_all: Send, events: int, procs: Workers
) -> float:
    await reset(conn)
    start = time.perf_counter()
    await send_all(events)
    await wait_rows(conn, events, procs)
    return events / (time.perf_counter() - start)


async def latency(
    conn: psycopg.AsyncConnection, send: Send, rate: float, seconds: float, procs: Workers
) -> tuple[float, float, str]:
    """As bench/events.py: a steady stream of jobs at `rate`/s for `seconds`."""
    await reset(conn)
    sent, achieved = await steady_stream(rate, seconds, send)
    await wait_rows(conn, sent, procs)
    cur = await conn.execute("SELECT latency_ms FROM peers_jobs ORDER BY latency_ms")
    values = [float(v) for (v,) in await cur.fetchall()]
    return latency_figures(values, achieved)


Result = tuple[float, float, float, str]  # events/s, p50 ms, p99 ms, the latency run


async def measure(
    url: str, send: Send, send_all: Send, procs: Workers, events: int, seconds: float
) -> Result:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await warm_up(conn, send, procs)
        rate = await throughput(conn, send_all, events, procs)
        p50, p99, run = await latency(conn, send, rate / 2, seconds, procs)
    return rate, p50, p99, run


async def run_celery(events: int, seconds: float, log_dir: Path) -> Result:
    queue = f"peers_bench_{uuid.uuid4().hex[:8]}"
    try:
        async with database() as url:
            env = {
                "PEERS_PG_URL": url,
                "PEERS_REDIS_URL": REDIS_URL,
                "PEERS_QUEUE": queue,
                "PEERS_CELERY_PREFETCH": str(CELERY_PREFETCH),
            }
            os.environ.update(env)  # read by bench.peer_celery when imported
            from bench import peer_celery

            app, record = peer_celery.app, peer_celery.record
            # the default queue (no `queue=` per call: that costs ~0.2 ms of CPU per job here)
            assert app.conf.task_default_queue == queue, "bench.peer_celery imported earlier"

            def send_sync(n: int) -> None:
                with app.producer_or_acquire() as producer:
                    for _ in range(n):
                        record.apply_async((time.time(),), producer=producer)

            async def send(n: int) -> None:
                await asyncio.to_thread(send_sync, n)

            command = [
                sys.executable, "-m", "celery", "-A", "bench.peer_celery", "worker",
                "--pool", "solo", "--queues", queue, "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            commands = [[*command, "--hostname", f"peers{i}@%h"] for i in range(WORKERS)]
            with workers(commands, env, log_dir) as procs:
                return await measure(url, send, send, procs, events, seconds)
    finally:
        _flush_redis()


async def run_procrastinate(events: int, seconds: float, log_dir: Path) -> Result:
    async with database() as url:
        env = {
            "PEERS_PG_URL": url,
            "PEERS_PROCRASTINATE_CONCURRENCY": str(PROCRASTINATE_CONCURRENCY),
        }
        from procrastinate import PsycopgConnector

        from bench import peer_procrastinate

        app = peer_procrastinate.app
        with app.replace_connector(PsycopgConnector(conninfo=url)):
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                deferrer = app.configure_task("peers.record")

                async def send(n: int) -> None:
                    t = time.time()
                    await deferrer.batch_defer_async(*[{"t": t}] * n)

                async def send_all(n: int) -> None:
                    for offset in range(0, n, BATCH):
                        await send(min(BATCH, n - offset))

                command = [
                    sys.executable, "-m", "procrastinate",
                    "--app=bench.peer_procrastinate.app", "worker",
                    "--concurrency", str(PROCRASTINATE_CONCURRENCY),
                ]  # fmt: skip
                commands = [[*command, "--name", f"peers{i}"] for i in range(WORKERS)]
                with workers(commands, env, log_dir) as procs:
                    return await measure(url, send, send_all, procs, events, seconds)


def stepwise_rate(
    lines: list[str], backend: str = "postgres", count: int = WORKERS
) -> float | None:
    """Stepwise's events/s for `backend` with `count` worker processes, from its printed lines."""
    pattern = re.compile(rf"^{backend}\s+{count} worker process\(es\)\s+([\d,.]+) events/s")
    for line in lines:
        if match := pattern.match(line):
            return float(match.group(1).replace(",", ""))
    return None


async def run(events: int, stepwise_results: list[str], seconds: float = 5.0) -> None:
    preflight()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # clean up on SIGTERM too
    print(
        f"peers ({events:,} jobs, {WORKERS} worker processes, one INSERT per job):"
        f" celery = Celery + Redis, --pool solo, prefetch x{CELERY_PREFETCH};"
        f" procrastinate = concurrency {PROCRASTINATE_CONCURRENCY} per worker",
        flush=True,
    )
    rates: dict[str, float] = {}
    peers = (
        ("celery", "redis", "celery 2 processes", run_celery),
        ("procrastinate", "postgres", "procrastinate 2 procs", run_procrastinate),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="peers_bench_") as tmp:
            for name, backend, how, runner in peers:
                try:
                    rate, p50, p99, run = await asyncio.wait_for(
                        runner(events, seconds, Path(tmp)), timeout=3 * PHASE_TIMEOUT
                    )
                except (PeerError, TimeoutError, OSError, psycopg.Error) as exc:
                    print(f"{backend:<9} {how:<22} failed: {exc}", flush=True)
                    continue
                rates[name] = rate
                print(figure_line(backend, how, rate, p50, p99, run), flush=True)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    ours = stepwise_rate(stepwise_results)
    if ours is None:
        print("ratios: no Stepwise postgres 2-worker figure in this run (--backends/--workers)")
        return
    for name, rate in rates.items():
        ratio, target = ours / rate, TARGETS[name]
        verdict = (
            "met"
            if ratio >= target
            else f"short by {target - ratio:.2f}x: needs {target * rate:,.0f} events/s,"
            f" {ours / (target * rate):.0%} of it"
        )
        print(
            f"ratio     Stepwise postgres 2 workers / {name:<13} {ours:>8,.0f} / {rate:,.0f}"
            f" = {ratio:5.2f}x   (target >= {target:.0f}x: {verdict})",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description="Celery + Redis and procrastinate, alone")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    opts = parser.parse_args()
    await run(opts.events, [], opts.seconds)


if __name__ == "__main__":
    asyncio.run(main())
