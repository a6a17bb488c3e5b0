"""Streams under stress: slow clients, restarts, other processes, other instances, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from tests.runtime.live import (
    live_app,
    recv,
    recv_until,
    server_process,
    sse,
    subscribe,
    wait_ready,
)
from tests.runtime.stream_steps import CHAT
from tests.support import ROOT, eventually, write_steps

U2 = {"X-Test-User": "u2"}
BIG = {
    **CHAT,
    "big_step.py": """
        config = {"name": "Big", "type": "api", "path": "/big/{room}/{size}", "method": "POST"}

        async def handler(req, ctx):
            size = int(req.params["size"])
            await ctx.streams.chat.set(req.params["room"], "big", {"author": "b", "text": "x" * size})
            await ctx.streams.chat.send(req.params["room"], {"type": "blob", "body": "y" * size})
            return {"status": 202, "body": {"ok": True}}
    """,
}


def noise(n: int) -> str:
    """Text that compression cannot shrink (the WebSocket may use permessage-deflate)."""
    return os.urandom(n // 2).hex()


@pytest.mark.parametrize("cut_by", ["queue", "send_timeout"])
async def test_a_client_that_never_reads_is_cut_off_while_others_keep_receiving(
    tmp_path: Path, db_url: str, cut_by: str
) -> None:
    limits: dict[str, Any] = (
        {"stream_queue_size": 20, "stream_send_timeout_seconds": 30}
        if cut_by == "queue"
        else {"stream_queue_size": 100_000, "stream_send_timeout_seconds": 1}
    )
    async with live_app(tmp_path, db_url, CHAT, **limits) as live:
        hub = live.runtime.stream_hub
        # A client with a tiny receive buffer that stops reading after subscribing.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(live.base.rsplit(":", 1)[1])))
        raw.setblocking(False)
        async with (
            live.connect("slow", sock=raw, max_queue=1) as slow,
            live.connect("fast") as fast,
        ):
            await subscribe(slow, "chat", "r")
            await subscribe(fast, "chat", "r")
            received: list[str] = []

            async def read_fast() -> None:
                while True:
                    frame = await recv(fast, timeout=10)
                    received.append(frame["id"])

            reader = asyncio.create_task(read_fast())
            chat = live.runtime.stream("chat")
            sent = 0
            while hub.dropped == 0:
                assert sent < 2000, "the slow client was never cut off"
                await chat.set("r", f"m{sent}", {"author": "a", "text": noise(16_000)})
                sent += 1
            assert hub.stats()["subscriptions"] == 1  # the slow client gets nothing more
            await chat.set("r", "after", {"author": "a", "text": "still flowing"})
            await eventually(lambda: asyncio.sleep(0, "after" in received))
            assert received == [f"m{n}" for n in range(sent)] + ["after"]
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            # When the slow client reads at last, it finds why it was cut off.
            frames: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(orjson.loads(await asyncio.wait_for(slow.recv(), 10)))
            assert frames[-1]["type"] == "error"
            assert frames[-1]["code"] == "slow_consumer"
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4008, "slow_consumer")
            assert "after" not in [f.get("id") for f in frames]


async def test_items_survive_a_restart(tmp_path: Path, any_db_url: str) -> None:
    steps = write_steps(tmp_path, CHAT)
    async with live_app(tmp_path, any_db_url, steps_dir=steps) as live, live.client() as http:
        await http.post("/post", json={"room": "r", "id": "m1", "text": "kept"}, headers=U2)
        await http.post("/typing/r", headers=U2)
    async with live_app(tmp_path, any_db_url, steps_dir=steps) as live:
        async with live.connect() as ws:
            frames = await subscribe(ws, "chat", "r")
        assert [(f.get("id"), f.get("data", {}).get("text")) for f in frames[:-1]] == [
            ("m1", "kept")
        ]
        assert frames[-1]["version"] >= 1


async def test_a_change_written_by_another_process_fills_the_gap_on_sqlite(
    tmp_path: Path, db_url: str
) -> None:
    """SQLite has no NOTIFY: a write by another process shows up as a gap in the versions
    the next time this process writes, and is read from the database."""
    if not db_url.startswith("sqlite"):
        pytest.skip("about SQLite")
    steps = write_steps(tmp_path, CHAT)
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from app.runtime import Runtime, discover
        from app.runtime._db import create_engine

        async def main():
            runtime = Runtime(discover(Path({str(steps)!r})), create_engine({db_url!r}))
            await runtime.stream("chat").set("r", "elsewhere", {{"author": "cli", "text": "x"}})
            await runtime.engine.dispose()

        asyncio.run(main())
    """)
    async with live_app(tmp_path, db_url, steps_dir=steps) as live:
        async with live.connect() as ws:
            await subscribe(ws, "chat", "r")
            done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
            assert done.returncode == 0, done.stderr
            await live.runtime.stream("chat").set("r", "here", {"author": "me", "text": "y"})
            first, second = await recv(ws), await recv(ws)
        assert [(first["id"], first["version"]), (second["id"], second["version"])] == [
            ("elsewhere", 1),
            ("here", 2),
        ]


# -- across instances (Postgres) ---------------------------------------------------------------


@pytest.mark.slow
async def test_two_server_processes_on_postgres_see_each_others_changes(
    tmp_path: Path, pg_url: str
) -> None:
    steps = write_steps(tmp_path, BIG)
    with server_process(pg_url, steps) as a, server_process(pg_url, steps) as b:
        await wait_ready(a)
        await wait_ready(b)
        async with a.connect() as ws, b.client() as http_b, a.client() as http_a:
            await subscribe(ws, "chat", "lobby")
            async with sse(http_a, "/streams/chat/lobby") as events:
                await events.until("subscribed")
                started = time.monotonic()
                posted = await http_b.post(
                    "/post", json={"room": "lobby", "id": "m1", "text": "from b!"}, headers=U2
                )
                assert posted.status_code == 201
                created = await recv(ws, timeout=2)
                assert (created["id"], created["event"], created["data"]["author"]) == (
                    "m1",
                    "create",
                    "u2",
                )
                assert time.monotonic() - started < 2
                analyzed = await recv(ws, timeout=10)
                assert (analyzed["event"], analyzed["data"]["mood"]) == ("update", "happy")
                assert [(await events.next())["data"]["event"] for _ in range(2)] == [
                    "create",
                    "update",
                ]
                # Larger than a NOTIFY payload: the item by reference, the event via the spill.
                await http_b.post("/big/lobby/20000", headers=U2)
                big = await recv_until(ws, event="custom", timeout=10)
                assert [(f["id"], f["event"]) for f in big] == [("big", "create"), (None, "custom")]
                assert len(big[0]["data"]["text"]) == 20000
                assert big[1]["data"] == {"type": "blob", "body": "y" * 20000}
                from_sse = await events.next()
                assert len(from_sse["data"]["data"]["text"]) == 20000


@pytest.mark.slow
async def test_changes_missed_while_the_listen_connection_was_down_still_arrive(
    tmp_path: Path, pg_url: str
) -> None:
    async with live_app(tmp_path, pg_url, CHAT) as live, live.connect() as ws:
        await subscribe(ws, "chat", "r")
        listener = live.runtime.listener
        assert listener is not None
        await asyncio.wait_for(listener.connected.wait(), 10)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'stepwise-listen' AND datname = current_database()"
            )
        await eventually(lambda: asyncio.sleep(0, not listener.connected.is_set()))
        await live.runtime.stream("chat").set("r", "m", {"author": "a", "text": "missed?"})
        frame = await recv(ws, timeout=10)
        assert (frame["id"], frame["version"]) == ("m", 1)


# -- shutdown ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_ends_stream_connections_with_a_reason_and_exits_promptly(
    tmp_path: Path, db_url: str
) -> None:
    steps = write_steps(tmp_path, CHAT)
    with server_process(db_url, steps) as server:
        await wait_ready(server)
        async with server.connect() as ws, server.client() as http:
            await subscribe(ws, "chat", "r")
            async with sse(http, "/streams/chat/r") as events:
                await events.until("subscribed")
                started = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                goodbye = await events.next(timeout=10)
                assert goodbye["event"] == "error"
                assert goodbye["data"]["code"] == "shutting_down"
                frame = await recv(ws, timeout=10)
                assert frame["code"] == "shutting_down"
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws, timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await asyncio.to_thread(server.process.wait, 15)
        # uvicorn re-raises the signal once it has shut down: ended by SIGTERM, not killed
        assert server.process.returncode in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 8


async def test_an_sse_client_that_never_reads_is_cut_off_with_a_reason(
    tmp_path: Path, db_url: str
) -> None:
    async with live_app(
        tmp_path, db_url, CHAT, stream_queue_size=20, stream_send_timeout_seconds=30
    ) as live:
        hub = live.runtime.stream_hub
        port = int(live.base.rsplit(":", 1)[1])
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", port))
        raw.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=raw, limit=2**24)
        writer.write(b"GET /streams/chat/r HTTP/1.1\r\nHost: test\r\nX-Test-User: slow\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"event: subscribed")
        writer.transport.pause_reading()  # stop reading, for real
        chat = live.runtime.stream("chat")
        sent = 0
        while hub.dropped == 0:
            assert sent < 2000, "the slow SSE client was never cut off"
            await chat.set("r", f"m{sent}", {"author": "a", "text": noise(16_000)})
            sent += 1
        writer.transport.resume_reading()
        tail = await asyncio.wait_for(reader.readuntil(b"slow_consumer"), 10)
        assert b"event: error" in tail[-400:]
        writer.close()
