"""Load on the sample API: closed-loop clients at increasing concurrency, with the worker running.

Starts the app as it is deployed (`python -m app api` and `python -m app worker`, on a fresh
SQLite file by default, or on `--database-url`), signs a user up, then for each level runs that
many clients for `--seconds`, each sending requests back to back in a fixed mix: POST /messages
(30%), POST /orders (20%), GET /messages (30%) and GET /orders/{id} (20%, one of its own).
Per level it prints requests/s, p50/p99 latency, errors, and the event queue's depth (deliveries
pending or running, sampled twice a second from the deliveries table: what `GET /metrics`
reports as `stepwise_queue_depth`, plus the retries waiting) during the level and when it ends,
then how long the worker takes to drain it to 0 before the next level.

The baseline, measured in the same run: a bare FastAPI route under uvicorn that validates the
same body and does one SQLite INSERT (WAL, synchronous=NORMAL, the same as Stepwise's default),
against Stepwise's POST /messages (token check, validation, the event written to the outbox and
the chat stream in one transaction, the step run recorded), both at `--baseline-clients`.

Everything runs on this machine over loopback: the clients share its CPUs with the app (and the
worker with the API), so read the ratio, not the absolute figures.

    .venv/bin/python bench/load.py [--levels 1,8,32,64] [--seconds 60] [--database-url URL]
    .venv/bin/python bench/load.py --quick          # 5 s a level, a 3 s baseline
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.runtime._db import sync_url  # noqa: E402
from bench.common import free_port, stop, wait_up  # noqa: E402

MIX = (
    ("POST /messages", 3),
    ("POST /orders", 2),
    ("GET /messages", 3),
    ("GET /orders/{id}", 2),
)
PHRASES = ("What a lovely day", "This is terrible", "The meeting is at noon", "I love it")
SKUS = ("BOOK-1", "MUG-1", "TSHIRT-M")
DRAIN_TIMEOUT = 300.0

BARE_APP = """
import os, sqlite3, uuid
from datetime import datetime, timezone
from fastapi import FastAPI
from pydantic import BaseModel, Field

db = sqlite3.connect(os.environ["BARE_DB"], isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute(
    "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, room TEXT NOT NULL, "
    "text TEXT NOT NULL, created_at TEXT NOT NULL)"
)
app = FastAPI()


class SendMessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    room: str = Field("general", pattern="^[A-Za-z0-9_-]{1,64}$")


@app.post("/messages", status_code=202)
async def send(body: SendMessageIn):
    message_id = str(uuid.uuid4())
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO messages (id, room, text, created_at) VALUES (?, ?, ?, ?)",
        (message_id, body.room, body.text, datetime.now(timezone.utc).isoformat()),
    )
    db.execute("COMMIT")
    return {"id": message_id, "status": "sent"}
"""


def _die_with_parent() -> None:
    """In the child: SIGKILL it if this process dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def processes(commands: list[list[str]], env: dict[str, str], logs: Path) -> Iterator[None]:
    """Start the commands (output in `logs`); terminate them at the end, killed if need be."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n, command in enumerate(commands):
            with (logs / f"{n}-{command[2] if len(command) > 2 else 'bare'}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env={**os.environ, **env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent,
                    )
                )
        yield
    finally:
        stop(procs)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0

    def record(self, route: str, seconds: float) -> None:
        self.latencies.setdefault(route, []).append(seconds * 1000)

    @property
    def all_latencies(self) -> list[float]:
        return [ms for values in self.latencies.values() for ms in values]


class Driver:
    """Closed-loop clients of the sample API, all signed in as one user."""

    def __init__(self, base_url: str, token: str, clients: int) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
        )
        self.orders: list[str] = []

    async def close(self) -> None:
        await self.http.aclose()

    async def one(self, route: str, rng: random.Random, stats: Stats) -> None:
        if route == "GET /orders/{id}" and not self.orders:
            route = "POST /orders"
        started = time.perf_counter()
        stats.requests += 1
        try:
            reply = await self._send(route, rng)
        except httpx.HTTPError as exc:
            stats.errors[f"{route}: {type(exc).__name__}"] += 1
            return
        if reply.status_code >= 400:
            stats.errors[f"{route}: {reply.status_code}"] += 1
            return
        stats.record(route, time.perf_counter() - started)
        if route == "POST /orders":
            self.orders.append(reply.json()["id"])
            del self.orders[:-1000]

    async def _send(self, route: str, rng: random.Random) -> httpx.Response:
        if route == "POST /messages":
            body = {"text": f"{rng.choice(PHRASES)} #{rng.randrange(10**6)}", "room": "load"}
            return await self.http.post("/messages", json=body)
        if route == "POST /orders":
            items = [{"sku": rng.choice(SKUS), "quantity": rng.randint(1, 3)}]
            return await self.http.post("/orders", json={"items": items})
        if route == "GET /messages":
            return await self.http.get("/messages", params={"room": "load", "limit": 20})
        return await self.http.get(f"/orders/{rng.choice(self.orders)}")

    async def run(self, clients: int, seconds: float, routes: tuple[tuple[str, int], ...]) -> Stats:
        stats = Stats()
        names = [r for r, _ in routes]
        weights = [w for _, w in routes]
        deadline = time.perf_counter() + seconds

        async def client(n: int) -> None:
            rng = random.Random(n)
            while time.perf_counter() < deadline:
                await self.one(rng.choices(names, weights)[0], rng, stats)

        await asyncio.gather(*(client(n) for n in range(clients)))
        return stats


def queue_depth(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM stepwise_deliveries WHERE status IN ('pending', 'running')"
                )
            ).scalar_one()
        )


async def sample_depth(engine: Engine, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(await asyncio.to_thread(queue_depth, engine))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def drain(engine: Engine) -> float | None:
    """Seconds until the queue is empty (None: not within DRAIN_TIMEOUT)."""
    started = time.perf_counter()
    while time.perf_counter() - started < DRAIN_TIMEOUT:
        if await asyncio.to_thread(queue_depth, engine) == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.1)
    return None


async def sign_up(base_url: str) -> str:
    email = f"load-{uuid.uuid4().hex[:8]}@example.com"
    password = "load-test-password"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        reply = await http.post(
            "/auth/register", json={"email": email, "password": password, "name": "Load"}
        )
        reply.raise_for_status()
        reply = await http.post("/auth/login", json={"email": email, "password": password})
        reply.raise_for_status()
        return str(reply.json()["access_token"])


def restock(engine: Engine) -> None:
    """Enough stock that every order goes through the whole workflow."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE products SET stock = 100000000"))


async def bare_baseline(folder: Path, seconds: float, clients: int) -> float:
    (folder / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    env = {"BARE_DB": str(folder / "bare.db"), "PYTHONPATH": str(folder)}
    with processes([command], env, folder):
        await wait_up(f"http://127.0.0.1:{port}/docs", timeout=120)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
        ) as http:
            stats = Stats()
            deadline = time.perf_counter() + seconds

            async def client(n: int) -> None:
                rng = random.Random(n)
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    body = {
                        "text": f"{rng.choice(PHRASES)} #{rng.randrange(10**6)}",
                        "room": "load",
                    }
                    reply = await http.post("/messages", json=body)
                    if reply.status_code == 202:
                        stats.record("POST /messages", time.perf_counter() - started)
                    else:
                        stats.errors[str(reply.status_code)] += 1

            await asyncio.gather(*(client(n) for n in range(clients)))
    return len(stats.all_latencies) / seconds


def level_line(clients: int, stats: Stats, seconds: float, during: list[int], end: int,
               drained: float | None) -> str:  # fmt: skip
    done = stats.all_latencies
    drain_text = f"{drained:7.1f}" if drained is not None else "  never"
    return (
        f"{clients:>7} {len(done) / seconds:>8.1f} {percentile(done, 0.5):>8.1f} "
        f"{percentile(done, 0.99):>8.1f} {sum(stats.errors.values()):>7} "
        f"{max(during, default=0):>9} {end:>9} {drain_text}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32,64", help="concurrent clients, per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each level")
    parser.add_argument("--database-url", help="default: a fresh SQLite file (it is migrated)")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--baseline-clients", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="5 s a level, a 3 s baseline")
    opts = parser.parse_args()
    if opts.quick:
        opts.seconds, opts.baseline_seconds = 5.0, 3.0
    levels = [int(n) for n in opts.levels.split(",")]

    with tempfile.TemporaryDirectory(prefix="stepwise-load-") as tmp:
        folder = Path(tmp)
        db_url = opts.database_url or f"sqlite:///{folder / 'load.db'}"
        backend = "postgres" if db_url.startswith("postgres") else "sqlite"
        port = free_port()
        env = {
            "DATABASE_URL": db_url,
            "ENV": "development",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        engine = create_engine(sync_url(db_url))
        restock(engine)
        print(
            f"Stepwise load: `python -m app api` + `python -m app worker` on {backend}, "
            f"{os.cpu_count()} CPUs shared with the clients, {opts.seconds:g} s a level"
        )
        print("baseline first: a bare FastAPI route doing one SQLite INSERT ...", flush=True)
        bare = await bare_baseline(folder, opts.baseline_seconds, opts.baseline_clients)
        api = [sys.executable, "-m", "app", "api", "--host", "127.0.0.1", "--port", str(port)]
        worker = [sys.executable, "-m", "app", "worker"]
        with processes([api, worker], env, folder):
            base = f"http://127.0.0.1:{port}"
            await wait_up(f"{base}/ready", timeout=120)
            token = await sign_up(base)
            driver = Driver(base, token, max([*levels, opts.baseline_clients]))
            try:
                await driver.run(4, 2.0, MIX)  # warm up (and the worker's first claims)
                await drain(engine)
                posts = await driver.run(
                    opts.baseline_clients, opts.baseline_seconds, (("POST /messages", 1),)
                )
                ours = len(posts.all_latencies) / opts.baseline_seconds
                await drain(engine)
                print(
                    f"{'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
                    f"{'queue max':>9} {'queue end':>9} {'drain s':>7}"
                )
                last: Stats | None = None
                for clients in levels:
                    during: list[int] = []
                    stop = asyncio.Event()
                    sampler = asyncio.create_task(sample_depth(engine, during, stop))
                    stats = await driver.run(clients, opts.seconds, MIX)
                    stop.set()
                    await sampler
                    end = await asyncio.to_thread(queue_depth, engine)
                    drained = await drain(engine)
                    print(
                        level_line(clients, stats, opts.seconds, during, end, drained), flush=True
                    )
                    for error, n in stats.errors.most_common(3):
                        print(f"{'':>8}error: {error} x{n}")
                    last = stats
            finally:
                await driver.close()
        engine.dispose()
    if last is not None:
        routes = ", ".join(
            f"{route} {percentile(ms, 0.5):.0f}/{percentile(ms, 0.99):.0f}"
            for route, ms in sorted(last.latencies.items())
        )
        print(f"p50/p99 ms by route at {levels[-1]} clients: {routes}")
    print(
        f"POST /messages at {opts.baseline_clients} clients: bare FastAPI + one SQLite INSERT "
        f"{bare:,.0f} req/s, Stepwise {ours:,.0f} req/s (worker running), "
        f"ratio Stepwise / bare {ours / bare:.2f}"
    )


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())
