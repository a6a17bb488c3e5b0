"""Screenshots of every Workbench section for docs/workbench.md (PNG files under docs/img/).

    .venv/bin/python -m tests.browser.screenshots [--out docs/img] [--port 3377]

Starts the demo project on 127.0.0.1 (SQLite in a temporary folder), gives it some history
(messages, a dead-lettered payment, stream items), then photographs each section with headless
Chromium. The browser tests use the same helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import httpx

from app.db import migrate
from tests.browser.helpers import browser_page, chromium_missing, make_history
from tests.workbench.demo import demo_app, demo_settings, live_server

ROOT = Path(__file__).resolve().parents[2]

# (file name, hash route, a selector to wait for); _prepare() clicks what a shot needs
SHOTS: list[tuple[str, str, str]] = [
    ("workbench-flows.png", "#/flows", ".step-node"),
    ("workbench-flow-messages.png", "#/flows/messages", ".step-node"),
    ("workbench-logs.png", "#/logs", "table.logs tbody tr"),
    ("workbench-traces.png", "#/traces", "tr[data-trace]"),
    ("workbench-trace.png", "#/traces/demo-message-0001", ".span-row"),
    ("workbench-state.png", "#/state/rooms", "tr[data-key]"),
    ("workbench-streams.png", "#/streams/chat/general", "td.mono"),
    ("workbench-dlq.png", "#/dlq", ".card.dead"),
    ("workbench-endpoints.png", "#/endpoints/SendMessage", "textarea"),
    ("workbench-cron.png", "#/cron", "tr[data-step]"),
    ("workbench-metrics.png", "#/metrics", "tr[data-step]"),
]


async def _prepare(page: Any, name: str) -> None:
    if name == "workbench-flows.png":
        await page.click('[data-step="SendMessage"]')
        await page.wait_for_selector("#step-detail h3")
    if name == "workbench-state.png":
        await page.click('tr[data-key="general"]')
        await page.wait_for_selector(".editor textarea")
    if name == "workbench-endpoints.png":
        await page.get_by_role("button", name="Send", exact=True).click()
        await page.wait_for_selector(".tester-trace .trace-head .badge.ok")


async def take(out: Path, port: int = 0) -> list[Path]:
    reason = chromium_missing()
    if reason:
        raise SystemExit(reason)
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/workbench.db"
        migrate(url)
        app = demo_app(demo_settings(Path(tmp), url, env="development"))
        async with live_server(app, port) as base, httpx.AsyncClient(base_url=base) as client:
            await make_history(client, app.state.runtime)
            async with browser_page(base) as page:
                for name, route, selector in SHOTS:
                    await page.goto("/workbench" + route)
                    await page.wait_for_selector(selector)
                    await _prepare(page, name)
                    await page.wait_for_timeout(150)  # let the last paint land in the picture
                    target = out / name
                    await page.screenshot(path=str(target), full_page=False)
                    written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    opts = parser.parse_args()
    for path in asyncio.run(take(opts.out, opts.port)):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
