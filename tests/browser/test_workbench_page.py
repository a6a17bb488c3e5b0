"""The Workbench page in headless Chromium: what a developer sees and clicks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.helpers import browser_page, chromium_missing
from tests.support import eventually
from tests.workbench.demo import DEMO_STEPS, demo_app, demo_settings, live_server

REASON = chromium_missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"browser tests skipped: {REASON}")

DEMO_NAMES = {
    "SendMessage",
    "ProcessMessage",
    "AnalyzeSentiment",
    "NotifyModerators",
    "ArchiveAnalysis",
    "ChargeCard",
    "RequestPayment",
    "NightlyReport",
}


@pytest.fixture
async def served(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    app = demo_app(demo_settings(tmp_path, db_url, env="development"))
    async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as client:
        yield base, client


async def test_the_flow_diagram_shows_every_step_and_a_click_shows_its_config(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    base, _ = served
    assert len(DEMO_STEPS) == len(DEMO_NAMES)
    async with browser_page(base) as page:
        await page.goto("/workbench")
        await page.wait_for_selector(".step-node")
        shown = await page.eval_on_selector_all(".step-node", "ns => ns.map(n => n.dataset.step)")
        kinds = await page.eval_on_selector_all(
            ".step-node", "ns => ns.map(n => n.getAttribute('class'))"
        )
        edge_labels = await page.eval_on_selector_all(
            ".edge-label", "ns => ns.map(n => n.textContent)"
        )
        await page.click('[data-step="SendMessage"]')
        detail = await page.inner_text("#step-detail")
        # one flow: the labelled steps and those wired to them by topics
        await page.click(".flow-list >> text=messages")
        await page.wait_for_selector('.component-title:has-text("flow: messages")')
        in_flow = await page.eval_on_selector_all(".step-node", "ns => ns.map(n => n.dataset.step)")
    assert set(shown) == DEMO_NAMES
    assert {k.split()[1] for k in kinds} == {"api", "event", "cron", "noop"}
    assert {"message.sent", "message.analyzed", "payment.requested"} <= set(edge_labels)
    assert "send_message_step.py" in detail
    assert "POST /messages" in detail
    assert "maxLength" in detail  # the body schema
    assert set(in_flow) == {
        "SendMessage",
        "ProcessMessage",
        "AnalyzeSentiment",
        "NotifyModerators",
        "ArchiveAnalysis",
    }


async def test_a_log_line_of_a_just_posted_message_appears_live(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    base, client = served
    async with browser_page(base) as page:
        await page.goto("/workbench#/logs")
        await page.wait_for_selector(".live-status.on")
        reply = await client.post(
            "/messages",
            json={"text": "a fresh hello from the test"},
            headers={"X-Trace-Id": "trace-browser-logs"},
        )
        assert reply.status_code == 202
        row = await page.wait_for_selector(
            'tr.log:has-text("a fresh hello from the test")', timeout=10_000
        )
        text = await row.inner_text()
        await (await row.query_selector("a.trace-link")).click()  # type: ignore[union-attr]
        await page.wait_for_selector('.span-row[data-step="SendMessage"]')
        url = page.url
    assert "Sending message" in text and "SendMessage" in text
    assert url.endswith("#/traces/trace-browser-logs")


async def test_a_trace_lists_send_message_and_its_downstream_steps(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    base, client = served
    reply = await client.post(
        "/messages", json={"text": "I love traces"}, headers={"X-Trace-Id": "trace-browser-0001"}
    )
    assert reply.status_code == 202
    async with browser_page(base) as page:
        await page.goto("/workbench#/traces/trace-browser-0001")
        await page.wait_for_selector('.span-row[data-step="ArchiveAnalysis"]', timeout=15_000)
        steps = await page.eval_on_selector_all(".span-row", "rs => rs.map(r => r.dataset.step)")
        events = await page.inner_text(".trace")
        await page.goto("/workbench#/traces")
        row = await page.wait_for_selector('tr[data-trace="trace-browser-0001"]')
        listing = await row.inner_text()
    assert steps[0] == "SendMessage"
    assert set(steps) == {"SendMessage", "ProcessMessage", "AnalyzeSentiment", "ArchiveAnalysis"}
    assert "message.sent" in events and "message.analyzed" in events
    assert "Sending message" in events  # its logs
    assert "SendMessage" in listing and "POST /messages" in listing


async def test_replaying_a_dead_letter_from_the_page_runs_it_again(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    base, client = served
    reply = await client.post("/payments/ord-7", headers={"X-Test-User": "ada:admin"})
    assert reply.status_code == 202

    async def dead() -> list[Any]:
        letters: list[Any] = (await client.get("/workbench/api/dlq")).json()["dead_letters"]
        return letters

    [letter] = await eventually(dead)
    async with browser_page(base) as page:
        await page.goto("/workbench#/dlq")
        card = await page.wait_for_selector(f'.card.dead[data-delivery="{letter["id"]}"]')
        shown = await card.inner_text()
        # fix the cause through the Workbench's state editor, then replay from the page
        await page.goto("/workbench#/state")
        await page.click("summary:has-text('Add a key')")
        await page.fill('input[aria-label="group"]', "payments")
        await page.fill('input[aria-label="key"]', "gateway_up")
        await page.fill('input[aria-label="value"]', "true")
        await page.get_by_role("button", name="Add", exact=True).click()
        await page.wait_for_selector('tr[data-key="gateway_up"]')
        await page.goto("/workbench#/dlq")
        await page.click(f'.card.dead[data-delivery="{letter["id"]}"] button.replay')
        await page.wait_for_selector("dialog[open]")
        await page.click("#confirm-ok")
        await page.wait_for_selector("text=No dead letters")

    async def paid() -> bool:
        value = await client.get(
            "/workbench/api/state/value", params={"group": "payments", "key": "ord-7"}
        )
        return value.status_code == 200 and value.json()["value"] == "paid"

    await eventually(paid)
    assert "card gateway unreachable for ord-7" in shown
    assert re.search(r"attempt 1 .*\n?.*attempt 2", shown, re.S)


async def test_state_is_edited_after_a_confirmation(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    base, client = served
    await client.put(
        "/workbench/api/state",
        params={"group": "settings", "key": "banner"},
        json={"value": {"text": "old"}},
        headers={"X-Stepwise-Workbench": "1"},
    )
    async with browser_page(base) as page:
        await page.goto("/workbench#/state/settings")
        await page.click('tr[data-key="banner"]')
        await page.fill(".editor textarea", '{"text": "new", "on": true}')
        await page.get_by_role("button", name="Save", exact=True).click()
        await page.click("#confirm-cancel")  # cancelled: nothing changes
        unchanged = (
            await client.get(
                "/workbench/api/state/value", params={"group": "settings", "key": "banner"}
            )
        ).json()
        await page.get_by_role("button", name="Save", exact=True).click()
        await page.click("#confirm-ok")
        await page.wait_for_selector('td.value:has-text("new")')
    changed = (
        await client.get(
            "/workbench/api/state/value", params={"group": "settings", "key": "banner"}
        )
    ).json()
    assert unchanged["value"] == {"text": "old"}
    assert changed["value"] == {"text": "new", "on": True}


async def test_the_endpoint_tester_sends_a_request_and_shows_its_trace(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    base, _ = served
    async with browser_page(base) as page:
        await page.goto("/workbench#/endpoints/SendMessage")
        await page.fill('textarea[aria-label="request body"]', '{"text": "from the tester"}')
        await page.get_by_role("button", name="Send", exact=True).click()
        await page.wait_for_selector(".response-head .badge.ok")
        status = await page.inner_text(".response-head")
        await page.wait_for_selector('.tester-trace .span-row[data-step="ProcessMessage"]')
    assert status.startswith("202")


async def test_the_screenshot_helper_photographs_every_section(tmp_path: Path) -> None:
    from tests.browser.screenshots import SHOTS, take

    written = await take(tmp_path / "img")
    assert sorted(p.name for p in written) == sorted(name for name, _, _ in SHOTS)
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
