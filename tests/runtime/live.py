"""Real servers for the streams tests: uvicorn in-process (one loop with the test) or in a
subprocess, on a loopback port picked by the OS, and a few helpers for WebSocket clients."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from app.runtime import Clock, Runtime
from tests.conftest import make_settings
from tests.runtime.conftest import HeaderUser, authenticate_test_token
from tests.support import ROOT, eventually, write_steps


@dataclass
class Live:
    """A running server: its URLs, and (in-process) the app and runtime behind it."""

    base: str
    app: Any = None
    process: Any = None

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://") + "/streams"

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=10)

    def connect(self, user: str | None = "u1", *, path: str = "", **kwargs: Any) -> Any:
        headers = {"X-Test-User": user} if user else {}
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("proxy", None)
        return connect(self.ws + path, additional_headers=headers, open_timeout=5, **kwargs)


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


@asynccontextmanager
async def live_app(
    tmp_path: Path,
    db_url: str,
    files: dict[str, str] | None = None,
    *,
    steps_dir: Path | None = None,
    role: str = "dev",
    clock: Clock | None = None,
    **overrides: Any,
) -> AsyncIterator[Live]:
    """The app served by uvicorn in this event loop, with the test auth (HeaderUser)."""
    from app.main import create_app

    steps_dir = steps_dir or write_steps(tmp_path, files or {})
    settings = make_settings(db_url, steps_dir=steps_dir, **overrides)
    app = create_app(settings, role=role, clock=clock)  # type: ignore[arg-type]
    app.add_middleware(HeaderUser)
    app.state.runtime.set_stream_authenticator(authenticate_test_token)
    sock = loopback_socket()
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", lifespan="on", timeout_graceful_shutdown=3
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    try:
        await eventually(started, timeout=20)
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextmanager
def server_process(db_url: str, steps_dir: Path, **env: str) -> Iterator[Live]:
    """`tests.runtime.stream_server` in a process of its own (python -m uvicorn --fd)."""
    sock = loopback_socket()
    full_env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "STEPS_DIR": str(steps_dir),
        "LOG_LEVEL": "WARNING",
        "ENV": "test",
        "PYTHONPATH": str(ROOT),
        # The machine's Postgres is shared (max_connections): servers in tests keep few.
        "DB_POOL_SIZE": "4",
        **env,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.runtime.stream_server:create",
            "--factory",
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=full_env,
        pass_fds=[sock.fileno()],
    )
    try:
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()


async def wait_ready(live: Live) -> None:
    async def up() -> bool:
        if live.process is not None and live.process.poll() is not None:
            raise AssertionError(f"the server exited with {live.process.returncode}")
        try:
            async with live.client() as http:
                return (await http.get("/openapi.json")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(up, timeout=30, interval=0.1)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame, as JSON (server heartbeats skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") != "ping":
                return dict(frame)


async def recv_until(
    ws: ClientConnection, type_: str | None = None, *, event: str | None = None, timeout: float = 5
) -> list[dict[str, Any]]:
    """Frames up to and including the first of `type_` (a control frame) or `event` (a change)."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            frames.append(frame)
            if type_ is not None and frame.get("type") == type_:
                return frames
            if event is not None and frame.get("event") == event:
                return frames


async def subscribe(
    ws: ClientConnection, stream: str, group: str, since: int | None = None
) -> list[dict[str, Any]]:
    """Subscribe; returns the snapshot frames (the `subscribed` frame last)."""
    spec: dict[str, Any] = {"stream": stream, "group_id": group}
    if since is not None:
        spec["since"] = since
    await ws.send(orjson.dumps({"subscribe": spec}).decode())
    return await recv_until(ws, "subscribed")


def send_json(ws: ClientConnection, frame: Any) -> Any:
    return ws.send(orjson.dumps(frame).decode())


class SSE:
    """A Server-Sent Events reader over an httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event: {"id", "event", "data"} (data parsed as JSON)."""
        event: dict[str, Any] = {"id": None, "event": "message", "data": None}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line == "":
                    if data:
                        event["data"] = orjson.loads("\n".join(data))
                        return event
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "id":
                    event["id"] = int(value)
                elif name == "event":
                    event["event"] = value
        raise EOFError("the event stream ended")

    async def until(self, event: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        events = []
        while True:
            got = await self.next(timeout)
            events.append(got)
            if got["event"] == event:
                return events


@asynccontextmanager
async def sse(
    http: httpx.AsyncClient, path: str, user: str | None = "u1", **headers: str
) -> AsyncIterator[SSE]:
    all_headers = {**({"X-Test-User": user} if user else {}), **headers}
    async with http.stream("GET", path, headers=all_headers) as response:
        yield SSE(response)
