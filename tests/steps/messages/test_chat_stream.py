"""The sample `chat` stream (group_id = room) and the page that follows it live."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.runtime import StreamError
from tests.conftest import ROOT, make_settings, running_app
from tests.runtime.live import live_app, recv, subscribe

MESSAGE = {
    "id": "m1",
    "author": "ann",
    "text": "What a lovely day",
    "created_at": "2026-11-25T10:00:00Z",
}


async def test_the_chat_stream_carries_a_message_then_its_sentiment(
    tmp_path: Path, db_url: str
) -> None:
    async with live_app(tmp_path, db_url, steps_dir=ROOT / "steps") as live:
        chat = live.runtime.stream("chat")
        async with live.connect("bob") as ws:
            await subscribe(ws, "chat", "general")
            stored = await chat.set("general", "m1", MESSAGE)
            assert stored.created_at == datetime(2026, 11, 25, 10, tzinfo=UTC)
            created = await recv(ws, timeout=1)
            assert created["event"] == "create"
            assert created["data"] == {
                **MESSAGE,
                "created_at": "2026-11-25T10:00:00Z",
                "sentiment": None,
                "sentiment_score": None,
            }
            await chat.set(
                "general", "m1", {**MESSAGE, "sentiment": "positive", "sentiment_score": 0.93}
            )
            analysed = await recv(ws, timeout=1)
            assert (analysed["event"], analysed["data"]["sentiment"]) == ("update", "positive")
        assert list(await chat.get_group("general")) == ["m1"]
        assert await chat.get_group("random") == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "x" * 2001}, "text"),
        ({"sentiment": "ecstatic"}, "sentiment"),
        ({"created_at": "yesterday"}, "created_at"),
    ],
)
async def test_a_message_that_does_not_fit_is_refused_naming_the_field(
    tmp_path: Path, db_url: str, change: dict[str, object], field: str
) -> None:
    async with running_app(make_settings(db_url), role="api") as client:
        chat = client.app.state.runtime.stream("chat")  # type: ignore[attr-defined]
        with pytest.raises(StreamError, match=f"{field}:"):
            await chat.set("general", "m1", {**MESSAGE, **change})
        assert await chat.get("general", "m1") is None


async def test_the_example_page_is_served_without_anything_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/examples/chat")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "/streams" in html and '"chat"' in html and "/messages" in html
    # no CDN: no script, stylesheet or font loaded from another origin
    assert re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html) == []
    assert "@import" not in html
