"""Headless Chromium (Debian's package) driven by Playwright, and a demo app with some history.

Never `playwright install`: the browser is /usr/bin/chromium. Without it the browser tests skip.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

CHROMIUM = os.environ.get("STEPWISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_missing() -> str | None:
    """None when the browser tests can run, else why not."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (uv sync)"
    return None


@asynccontextmanager
async def browser_page(base_url: str, width: int = 1440, height: int = 900) -> AsyncIterator[Any]:
    """A fresh page of headless Chromium; JavaScript errors on the page fail loudly."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                base_url=base_url, viewport={"width": width, "height": height}
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: errors.append(msg.text) if msg.type == "error" else None,
            )
            page.js_errors = errors
            yield page
            assert errors == [], f"errors on the page: {errors}"
        finally:
            await browser.close()


async def make_history(client: httpx.AsyncClient, runtime: Any) -> dict[str, str]:
    """Messages through the pipeline, a payment that dead-letters, stream items: what a
    developer's Workbench shows after a few minutes of work."""
    from tests.support import eventually

    for n, text in enumerate(["Hello team", "I love this release", "Deploy at 5?"]):
        reply = await client.post(
            "/messages",
            json={"text": text, "room": "general" if n != 1 else "launch"},
            headers={"X-Trace-Id": f"demo-message-{n:04d}"},
        )
        assert reply.status_code == 202, reply.text
    reply = await client.post(
        "/payments/ord-1042",
        headers={"X-Test-User": "ada:admin", "X-Trace-Id": "demo-payment-0001"},
    )
    assert reply.status_code == 202, reply.text

    async def settled() -> bool:
        letters = (await client.get("/workbench/api/dlq")).json()["dead_letters"]
        trace = await client.get("/workbench/api/traces/demo-message-0002")
        return bool(letters) and trace.status_code == 200 and len(trace.json()["runs"]) >= 4

    await eventually(settled, timeout=20)
    from app.runtime._schema import stream_items

    now = time.time()
    async with runtime.engine.begin() as conn:
        await conn.execute(
            insert(stream_items),
            [
                {
                    "stream": "chat",
                    "group_id": room,
                    "id": f"msg-{n}",
                    "data": f'{{"text": "{text}", "sentiment": "{label}"}}',
                    "version": 1,
                    "updated_at": now - 60 + n,
                }
                for n, (room, text, label) in enumerate(
                    [
                        ("general", "Hello team", "neutral"),
                        ("launch", "I love this release", "positive"),
                        ("general", "Deploy at 5?", "neutral"),
                    ]
                )
            ],
        )
    return {"trace": "demo-message-0001", "payment": "demo-payment-0001"}
