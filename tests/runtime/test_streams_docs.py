"""The Python client of docs/streams.md, run as written against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

from tests.runtime.live import live_app
from tests.runtime.stream_steps import CHAT
from tests.support import ROOT, eventually


def docs_client() -> dict[str, Any]:
    text = (ROOT / "docs" / "streams.md").read_text()
    section = text.split("## A Python client", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code.group(1), "docs/streams.md", "exec"), namespace)
    return namespace


async def test_the_documented_client_follows_a_room_and_resumes_after_a_cut(
    tmp_path: Path, db_url: str
) -> None:
    follow = docs_client()["follow"]
    changes: list[dict[str, Any]] = []
    async with live_app(tmp_path, db_url, CHAT) as live:
        chat = live.runtime.stream("chat")
        await chat.set("general", "m1", {"author": "ann", "text": "first"})
        task = asyncio.create_task(follow(live.ws, "reader", "general", changes.append))
        try:
            await eventually(lambda: asyncio.sleep(0, len(changes) == 1))
            hub = live.runtime.stream_hub
            [conn] = [c for c in hub.connections if c.user_key == "reader"]
            hub.drop(conn, "slow_consumer", "cut by the test")
            await eventually(lambda: asyncio.sleep(0, conn not in hub.connections))
            await chat.set("general", "m2", {"author": "bob", "text": "while away"})
            await eventually(lambda: asyncio.sleep(0, len(changes) == 2), timeout=10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert [(c["id"], c["data"]["text"]) for c in changes] == [
        ("m1", "first"),
        ("m2", "while away"),
    ]
