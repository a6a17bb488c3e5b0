"""A message sent over HTTP reaches the room's followers on the `chat` stream, then its
sentiment does."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT
from tests.runtime.live import live_app, recv, subscribe
from tests.steps.messages.helpers import NEGATIVE, POSITIVE


async def test_a_message_then_its_sentiment_reach_the_rooms_followers(
    tmp_path: Path, any_db_url: str
) -> None:
    async with (
        live_app(tmp_path, any_db_url, steps_dir=ROOT / "steps") as live,
        live.connect("bob") as ws,
        live.client() as http,
    ):
        await subscribe(ws, "chat", "lobby")
        elsewhere = await http.post(
            "/messages", json={"text": NEGATIVE}, headers={"X-Test-User": "ann:user"}
        )
        sent = await http.post(
            "/messages",
            json={"text": POSITIVE, "room": "lobby"},
            headers={"X-Test-User": "ann:user"},
        )
        message_id = sent.json()["id"]
        created = await recv(ws)
        analysed = await recv(ws)
    assert elsewhere.status_code == sent.status_code == 202
    # Only the room's messages: the one for `general` never shows up here.
    assert (created["event"], created["id"], created["group_id"]) == ("create", message_id, "lobby")
    assert created["data"]["text"] == POSITIVE and created["data"]["author"] == "ann"
    assert created["data"]["sentiment"] is None
    assert (analysed["event"], analysed["id"]) == ("update", message_id)
    assert analysed["data"]["sentiment"] == "positive"
    assert analysed["data"]["sentiment_score"] > 0.05
    assert analysed["data"]["created_at"] == created["data"]["created_at"]
