"""The fault tests' harness: the app as real processes (`python -m app api|worker|dev`), clients
loading the sample flows at a steady rate, and a TCP proxy that can cut the database away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, eventually

PASSWORD = "correct horse battery"
DECLINED_CARD = "4000 0000 0000 0002"
SKUS = ("BOOK-1", "MUG-1", "TSHIRT-M")
# VADER labels these positive, negative and neutral; each request adds a unique tag.
PHRASES = ("I love this, what a great day", "This is awful and I hate it", "The bus leaves at 9")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes ------------------------------------------------------------------------------------


class AppProcess:
    """One `python -m app ROLE` process, its output in a log file next to the test's data."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AppProcess:
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.name}: {' '.join(self.args)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest reaches it through our teardown
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is given back, nothing is flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """The app's processes on one database and one port: `api` + `worker`s, or `dev` alone."""

    def __init__(self, db_url: str, folder: Path, **env: str) -> None:
        self.db_url = db_url
        self.folder = folder
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "ENV": "test",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "console",
            "PYTHONUNBUFFERED": "1",
            "SQLITE_SYNCHRONOUS": "NORMAL",
            # The machine's Postgres is shared (max_connections): few connections a process.
            "DB_POOL_SIZE": "4",
            # Real argon2id at its cheapest: sign-ups are not what these tests measure.
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "8192",
            "PASSWORD_HASH_PARALLELISM": "1",
            # Some payments are declined at random: retries run while the faults happen.
            "PAYMENT_FAILURE_RATE": "0.1",
            "SHUTDOWN_GRACE_SECONDS": "5",
            # Long leases: a delivery that only ran again once its lease expired would make
            # the drain outlast `verify.DRAIN_TIMEOUT`. Recovery must not wait for them.
            "LEASE_SECONDS": "60",
            "LEASE_RENEW_SECONDS": "20",
            **env,
        }
        self.processes: list[AppProcess] = []
        self._count: Counter[str] = Counter()

    def _process(self, role: str, args: list[str], **env: str) -> AppProcess:
        self._count[role] += 1
        name = f"{role}-{self._count[role]}"
        proc = AppProcess(name, args, {**self.env, **env}, self.folder / f"{role}.log")
        self.processes.append(proc)
        return proc.start()

    def api(self, **env: str) -> AppProcess:
        return self._process("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)], **env)

    def worker(self, **env: str) -> AppProcess:
        return self._process("worker", ["worker"], **env)

    def dev(self, **env: str) -> AppProcess:
        """Everything in one process (API, worker, cron), as `make run` starts it."""
        args = ["dev", "--no-reload", "--host", "127.0.0.1", "--port", str(self.port)]
        return self._process("dev", args, **env)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until GET /ready answers 200 (the database answers, migrations at head)."""

        async def ready() -> bool:
            dead = [p for p in self.processes if p.proc is not None and p.proc.poll() is not None]
            for p in dead:
                if p.proc is not None and p.proc.returncode not in (0, -signal.SIGKILL):
                    raise AssertionError(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
            try:
                async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
                    return (await http.get("/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=timeout, interval=0.1)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process still running (SIGKILL after a while); their exit codes."""
        return {p.name: p.stop() for p in self.processes if p.alive()}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.processes)


# -- clients --------------------------------------------------------------------------------------


@dataclass
class Account:
    id: str
    email: str
    token: str


async def sign_up(base_url: str, email: str) -> Account:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        reply = await http.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Load Tester"}
        )
        assert reply.status_code == 201, reply.text
        user_id = str(reply.json()["id"])
        reply = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        return Account(user_id, email, reply.json()["access_token"])


def is_envelope(reply: httpx.Response) -> bool:
    try:
        body = reply.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and set(body) == {"error", "code", "details", "trace_id"}
        and isinstance(body["error"], str)
        and bool(body["error"])
    )


@dataclass
class Tally:
    """What the clients saw. `accepted_*`: requests answered 2xx (their effects must exist
    exactly once); `unanswered_*`: requests that got no HTTP answer at all (the process died
    or the connection broke): their effects may exist (once) or not at all."""

    accepted_messages: dict[str, str] = field(default_factory=dict)  # id -> text
    accepted_orders: dict[str, str] = field(default_factory=dict)  # id -> user id
    unanswered_messages: set[str] = field(default_factory=set)  # texts
    unanswered_orders: Counter[str] = field(default_factory=Counter)  # user id -> count
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    refused: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # clean 5xx
    bad: list[str] = field(default_factory=list)  # 500s, 5xx without the envelope, surprises
    requests: int = 0

    @property
    def accepted(self) -> int:
        return len(self.accepted_messages) + len(self.accepted_orders)

    @property
    def unanswered(self) -> int:
        return len(self.unanswered_messages) + sum(self.unanswered_orders.values())

    def summary(self) -> str:
        codes = ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(self.statuses.items()))
        return (
            f"{self.requests} requests, {self.accepted} accepted, {self.unanswered} unanswered, "
            f"{len(self.bad)} bad [{codes}]"
        )


# Statuses a client may see besides success: reads of a message not stored yet (404), and the
# clean refusals of an outage (503 database unavailable, 507 storage full) in the envelope.
EXPECTED_REFUSALS = {503, 507}


class Load:
    """`clients` signed-in clients, each sending `rate` requests a second: POST /messages and
    POST /orders in turn, and every third request a read of something it created."""

    def __init__(
        self,
        base_url: str,
        accounts: list[Account],
        *,
        rate: float = 8.0,
        timeout: float = 5.0,
        tally: Tally | None = None,
    ) -> None:
        self.base_url = base_url
        self.accounts = accounts
        self.rate = rate
        self.timeout = timeout
        self.tally = tally if tally is not None else Tally()
        self.in_flight = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._tasks = [
            asyncio.create_task(self._client(n, account)) for n, account in enumerate(self.accounts)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> Tally:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
            self._tasks = []
        return self.tally

    async def until(self, accepted: int, timeout: float = 60) -> None:
        """Wait until this many requests in all were accepted since the load started."""
        start = self.tally.accepted

        async def enough() -> bool:
            self._check_clients()
            return self.tally.accepted - start >= accepted

        await eventually(enough, timeout=timeout, interval=0.05)

    async def requests_in_flight(self, timeout: float = 10) -> None:
        """Until some request is on its way (to kill a process in the middle of one)."""

        async def busy() -> bool:
            self._check_clients()
            return self.in_flight > 0

        await eventually(busy, timeout=timeout, interval=0.001)

    async def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._check_clients()
            await asyncio.sleep(0.05)

    def _check_clients(self) -> None:
        for task in self._tasks:
            if task.done() and task.exception() is not None:
                raise AssertionError("a load client crashed") from task.exception()

    async def _client(self, index: int, account: Account) -> None:
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {account.token}"}
        mine: list[tuple[str, str]] = []
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=self.timeout
        ) as http:
            n = 0
            next_at = loop.time()
            while not self._stop.is_set():
                n += 1
                if n % 3 == 0 and mine:
                    kind, item_id = mine[-1]
                    await self._read(http, kind, item_id)
                elif n % 3 == 1:
                    created = await self._send_message(http, index, n)
                    if created:
                        mine.append(("messages", created))
                else:
                    created = await self._place_order(http, account, n)
                    if created:
                        mine.append(("orders", created))
                next_at = max(next_at + 1 / self.rate, loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - loop.time()))

    async def _send_message(self, http: httpx.AsyncClient, index: int, n: int) -> str | None:
        text = f"{PHRASES[n % len(PHRASES)]} [load c{index}-{n}]"
        reply = await self._call(
            http, "POST /messages", "POST", "/messages", {"text": text, "room": f"load-{index}"}
        )
        if reply is None:
            self.tally.unanswered_messages.add(text)
            return None
        if reply.status_code == 202:
            message_id = str(reply.json()["id"])
            self.tally.accepted_messages[message_id] = text
            return message_id
        return None

    async def _place_order(self, http: httpx.AsyncClient, account: Account, n: int) -> str | None:
        placed = n // 3  # the how-many-th order of this client
        items = [{"sku": SKUS[placed % len(SKUS)], "quantity": 1 + placed % 2}]
        if placed % 4 == 3:
            items.append({"sku": SKUS[(placed + 1) % len(SKUS)], "quantity": 1})
        body: dict[str, Any] = {"items": items}
        if placed % 10 == 7:
            body["card_number"] = DECLINED_CARD
        reply = await self._call(http, "POST /orders", "POST", "/orders", body)
        if reply is None:
            self.tally.unanswered_orders[account.id] += 1
            return None
        if reply.status_code == 201:
            order_id = str(reply.json()["id"])
            self.tally.accepted_orders[order_id] = account.id
            return order_id
        return None

    async def _read(self, http: httpx.AsyncClient, kind: str, item_id: str) -> None:
        reply = await self._call(http, f"GET /{kind}/id", "GET", f"/{kind}/{item_id}", None)
        if reply is not None and reply.status_code == 200 and reply.json()["id"] != item_id:
            self.tally.bad.append(f"GET /{kind}/{item_id} answered another id")

    async def _call(
        self, http: httpx.AsyncClient, label: str, method: str, path: str, body: Any
    ) -> httpx.Response | None:
        """The reply, or None when none came (connection refused, broken, or timed out)."""
        self.tally.requests += 1
        self.in_flight += 1
        try:
            reply = await http.request(method, path, json=body)
        except httpx.TransportError:
            self.tally.statuses[(label, 0)] += 1
            return None
        finally:
            self.in_flight -= 1
        status = reply.status_code
        self.tally.statuses[(label, status)] += 1
        if status < 300:
            return reply
        if status in EXPECTED_REFUSALS and is_envelope(reply):
            self.tally.refused[(label, status, reply.json()["code"])] += 1
            if "retry-after" not in reply.headers:
                self.tally.bad.append(f"{label}: {status} without Retry-After")
        elif not (status == 404 and label == "GET /messages/id" and is_envelope(reply)):
            self.tally.bad.append(f"{label}: {status} {reply.text[:300]}")
        return reply


async def accounts_for(base_url: str, count: int, prefix: str) -> list[Account]:
    return [await sign_up(base_url, f"{prefix}-{n}@example.com") for n in range(count)]


@dataclass
class System:
    """The app running on one database (`api` and two `worker` processes) with its signed-up
    clients. Tests take turns hurting it; `tally` keeps what every test's clients were told, so
    the checks read the whole database against everything ever accepted."""

    name: str
    db_url: str  # for the test's own reads (directly, never through the proxy)
    cluster: Cluster
    accounts: list[Account]
    initial_stock: dict[str, int]
    tally: Tally = field(default_factory=Tally)
    proxy: TcpProxy | None = None

    @property
    def api(self) -> AppProcess:
        return [p for p in self.cluster.processes if p.name.startswith("api") and p.alive()][-1]

    @property
    def workers(self) -> list[AppProcess]:
        return [p for p in self.cluster.processes if p.name.startswith("worker") and p.alive()]

    def load(self, **options: Any) -> Load:
        return Load(self.cluster.base_url, self.accounts, tally=self.tally, **options)

    async def heal(self) -> None:
        """What a supervisor would do: an API and two workers running, and ready."""
        if self.proxy is not None and not self.proxy.is_open:
            self.proxy.restore()
        if not any(p.name.startswith("api") and p.alive() for p in self.cluster.processes):
            self.cluster.api()
        for _ in range(2 - len(self.workers)):
            self.cluster.worker()
        await self.cluster.wait_ready()


# -- the database, cut away -----------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy in front of Postgres, on a thread (and event loop) of its own so that
    it outlives any one test's loop. `cut()` closes its port and drops every open connection, as
    a database restart or a network failure would; `restore()` opens the port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> TcpProxy:
        self._call(self._open())
        return self

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._open())

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)
