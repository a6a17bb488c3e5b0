"""A WebSocket on /streams signs in with a real access token, in its first message."""

from __future__ import annotations

import asyncio
import json

import httpx
import uvicorn
from websockets.asyncio.client import connect

from app.main import create_app
from tests.accounts import login, register
from tests.conftest import ROOT, make_settings
from tests.runtime.live import loopback_socket
from tests.support import eventually


async def test_the_first_message_signs_in_with_the_same_token_check(db_url: str) -> None:
    app = create_app(make_settings(db_url, steps_dir=ROOT / "steps"))
    sock = loopback_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _started(server, task), timeout=20)
        base = f"127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=f"http://{base}") as client:
            await register(client, "ws@example.com")
            token = await login(client, "ws@example.com")
        async with connect(f"ws://{base}/streams", proxy=None) as good:
            await good.send(json.dumps({"auth": {"token": token}}))
            signed_in = json.loads(await asyncio.wait_for(good.recv(), 10))
            await good.send(json.dumps({"subscribe": {"stream": "chat", "group_id": "general"}}))
            subscribed = json.loads(await asyncio.wait_for(good.recv(), 10))
        async with connect(f"ws://{base}/streams", proxy=None) as bad:
            await bad.send(json.dumps({"auth": {"token": token[:-4] + "AAAA"}}))
            refused = json.loads(await asyncio.wait_for(bad.recv(), 10))
    finally:
        server.should_exit = True
        await task
        sock.close()
    assert signed_in == {"type": "authenticated"}
    assert subscribed["type"] == "subscribed" and subscribed["group_id"] == "general"
    assert refused["type"] == "error"


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
    return server.started
