"""Stream fan-out: 1,000 WebSocket clients following one group, on loopback.

A server process (the app under uvicorn: uvloop, httptools, websockets) serves the `fanout`
stream of bench/bench_stream_steps; client processes hold the WebSocket connections, each
signed in (first message) and subscribed to the one group. Then:

  latency:    `--sets` times, POST /bench/tick (an API step doing ctx.streams.fanout.set) and
              wait until every client has the change; the figure for one set is the time from
              the handler's `set` to the LAST client receiving it; p50 and p99 over the sets.
  throughput: `--burst` sets posted back to back; deliveries/s until every client has them all.

The same is measured, in the same run, for a baseline: a bare FastAPI WebSocket endpoint that
broadcasts by awaiting `send_text` on each connection in turn (the usual ConnectionManager),
with no database, no auth, no subscription. Everything is bounded by `--timeout`.

    .venv/bin/python bench/streams.py [--clients 1000] [--sets 200] [--burst 100]
                                      [--backend sqlite|postgres] [--procs 2] [--deflate]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi import Request, WebSocket, WebSocketDisconnect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = ROOT / "bench" / "bench_stream_steps"
PG_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# -- the server process ---------------------------------------------------------------------------


def serve(fd: int, database_url: str) -> None:
    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        env="test",
        database_url=database_url,
        steps_dir=STEPS,
        log_level="WARNING",
        record_runs=False,
        stream_max_connections_per_user=10,
    )
    app = create_app(settings, role="api")

    async def authenticate(token: str) -> dict[str, str]:
        return {"id": token, "role": "user"}

    app.state.runtime.set_stream_authenticator(authenticate)

    # The baseline: what a FastAPI tutorial's ConnectionManager does.
    raw: list[WebSocket] = []

    async def raw_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        raw.append(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            raw.remove(websocket)

    async def raw_tick(request: Request) -> dict[str, bool]:
        body = await request.json()
        message = json.dumps({"n": body["n"], "t": time.time(), "pad": "x" * body.get("pad", 0)})
        for websocket in list(raw):
            with contextlib.suppress(Exception):
                await websocket.send_text(message)
        return {"ok": True}

    app.add_api_websocket_route("/raw", raw_socket)
    app.add_api_route("/raw/tick", raw_tick, methods=["POST"])
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


# -- a client process -----------------------------------------------------------------------------


async def clients(url: str, count: int, mode: str, deflate: bool, name: str) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    gate = asyncio.Semaphore(50)
    received: dict[int, int] = {}
    slowest: dict[int, float] = {}

    async def open_one(i: int) -> ClientConnection:
        async with gate:
            ws = await connect(
                url,
                compression="deflate" if deflate else None,
                ping_interval=None,
                proxy=None,
                open_timeout=60,
                max_size=None,
            )
            if mode == "stepwise":
                await ws.send(json.dumps({"auth": {"token": f"{name}-{i}"}}))
                sub = {"subscribe": {"stream": "fanout", "group_id": "all"}}
                await ws.send(json.dumps(sub))
                while json.loads(await ws.recv()).get("type") != "subscribed":
                    pass
            return ws

    async def read(ws: ClientConnection) -> None:
        async for message in ws:
            now = time.time()
            frame = json.loads(message)
            data = frame if mode == "raw" else frame.get("data")
            if not isinstance(data, dict) or "n" not in data:
                continue  # control frames (heartbeats)
            n = data["n"]
            received[n] = received.get(n, 0) + 1
            latency = now - data["t"]
            if latency > slowest.get(n, 0.0):
                slowest[n] = latency
            if received[n] == count:
                print(f"GOT {n}", flush=True)

    sockets = await asyncio.gather(*(open_one(i) for i in range(count)))
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says when to stop
    print("RESULT " + json.dumps({"slowest": slowest, "received": received}), flush=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# -- the parent -----------------------------------------------------------------------------------


class ClientProcs:
    """Client processes and their stdout lines (READY, GOT n, RESULT ...)."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.lines: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, url: str, total: int, count: int, mode: str, deflate: bool) -> None:
        share = [total // count + (1 if i < total % count else 0) for i in range(count)]
        for i, n in enumerate(share):
            args = [__file__, "--client", url, "--count", str(n), "--mode", mode, "--name", f"c{i}"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                *(["--deflate"] if deflate else []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.procs.append(proc)
            self.readers.append(asyncio.create_task(self._read(i, proc)))

    async def _read(self, i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            await self.lines.put((i, line.decode().strip()))
        await self.lines.put((i, "EXIT"))

    async def expect(self, what: str, deadline: float) -> list[str]:
        """Wait until every process printed a line starting with `what`."""
        pending = set(range(len(self.procs)))
        got: list[str] = []
        while pending:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise SystemExit(f"timed out waiting for {what!r} from processes {pending}")
            i, line = await asyncio.wait_for(self.lines.get(), timeout)
            if line == "EXIT":
                raise SystemExit(f"client process {i} exited early")
            matches = line.startswith(what) if what.endswith(" ") else line == what
            if matches and i in pending:
                pending.discard(i)
                got.append(line)
        return got

    async def results(self, deadline: float) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        lines = await self.expect("RESULT ", deadline)
        return [json.loads(line.removeprefix("RESULT ")) for line in lines]

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        for task in self.readers:
            task.cancel()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_case(
    base: str, mode: str, args: argparse.Namespace, deadline: float
) -> dict[str, float]:
    ws_url = base.replace("http://", "ws://") + ("/streams" if mode == "stepwise" else "/raw")
    tick = "/bench/tick" if mode == "stepwise" else "/raw/tick"
    procs = ClientProcs()
    try:
        started = time.monotonic()
        await procs.start(ws_url, args.clients, args.procs, mode, args.deflate)
        await procs.expect("READY", deadline)
        connect_s = time.monotonic() - started
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # latency: one set at a time, the next once every client has the previous one
            for n in range(1, args.sets + 1):
                (await http.post(tick, json={"n": n, "pad": args.pad})).raise_for_status()
                await procs.expect(f"GOT {n}", deadline)
            # throughput: a burst posted back to back
            first = args.sets + 1
            last = args.sets + args.burst
            t0 = time.perf_counter()
            for n in range(first, last + 1):
                (await http.post(tick, json={"n": n, "pad": args.pad})).raise_for_status()
            await procs.expect(f"GOT {last}", deadline)  # each client gets them in order
            burst_s = time.perf_counter() - t0
        results = await procs.results(deadline)
    finally:
        await procs.stop()
    slowest = [
        max(r["slowest"].get(str(n), 0.0) for r in results) * 1000 for n in range(1, args.sets + 1)
    ]
    return {
        "connect_s": connect_s,
        "p50_ms": statistics.median(slowest),
        "p99_ms": pct(slowest, 0.99),
        "max_ms": max(slowest),
        "msgs_per_s": args.clients * args.burst / burst_s,
    }


@asynccontextmanager
async def database(backend: str) -> AsyncIterator[str]:
    from app.db import migrate

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


async def main(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    async with database(args.backend) as url:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            str(sock.fileno()),
            "--database",
            url,
            pass_fds=[sock.fileno()],
        )
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/openapi.json")).status_code == 200:
                            break
                    if time.monotonic() > deadline or server.returncode is not None:
                        raise SystemExit("the server did not start")
                    await asyncio.sleep(0.1)
            figures = {mode: await run_case(base, mode, args, deadline) for mode in args.modes}
        finally:
            if server.returncode is None:
                server.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait(), 15)
            if server.returncode is None:
                server.kill()
            sock.close()
    compression = "permessage-deflate" if args.deflate else "no compression"
    print(
        f"\nstream fan-out on {args.backend}: {args.clients} WebSocket clients on one group "
        f"({args.procs} client processes, {compression}, item pad {args.pad} B)"
    )
    print(f"{'':>10} {'connect':>9} {'p50':>9} {'p99':>9} {'max':>9} {'deliveries/s':>13}")
    for mode, f in figures.items():
        print(
            f"{mode:>10} {f['connect_s']:>8.1f}s {f['p50_ms']:>7.1f}ms {f['p99_ms']:>7.1f}ms "
            f"{f['max_ms']:>7.1f}ms {f['msgs_per_s']:>13,.0f}"
        )
    if {"stepwise", "raw"} <= figures.keys():
        s, r = figures["stepwise"], figures["raw"]
        print(
            f"stepwise / baseline: p99 x{s['p99_ms'] / r['p99_ms']:.2f}, "
            f"deliveries/s x{s['msgs_per_s'] / r['msgs_per_s']:.2f}"
        )
    print(
        f"(latency: set -> the last of {args.clients} clients has it, over {args.sets} sets; "
        f"deliveries/s over a burst of {args.burst} sets; target p99 <= 250 ms)"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--sets", type=int, default=200)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--pad", type=int, default=100, help="bytes of padding in each item")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--deflate", action="store_true", help="clients ask for compression")
    parser.add_argument("--modes", default="stepwise,raw", type=lambda v: v.split(","))
    parser.add_argument("--timeout", type=float, default=300, help="seconds for everything")
    parser.add_argument("--serve", type=int, metavar="FD", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    options = parse()
    if options.serve is not None:
        serve(options.serve, options.database)
    elif options.client:
        asyncio.run(
            clients(options.client, options.count, options.mode, options.deflate, options.name)
        )
    else:
        asyncio.run(main(options))
