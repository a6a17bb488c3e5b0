"""ProcessMessage and AnalyzeSentiment: idempotent, in either order, bounded history, VADER."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.runtime.testing import StepTester
from app.settings import Settings
from steps.messages.models import Message
from steps.messages.service import sentiment_of
from tests.steps.messages.helpers import (
    NEGATIVE,
    POSITIVE,
    sample_app,
    settled,
    state,
    step_testers,
)
from tests.support import eventually, runtime_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sent(text: str = POSITIVE, room: str = "general", at: datetime = T0) -> dict[str, Any]:
    """A `message.sent` payload as SendMessage emits it."""
    return {
        "id": str(uuid.uuid4()),
        "room": room,
        "author": "user-7",
        "text": text,
        "created_at": at.isoformat(),
    }


async def rows(tester: StepTester) -> list[Any]:
    """Every row of the messages table."""
    async with tester.runtime.engine.connect() as conn:
        return list(await conn.execute(select(Message.__table__)))


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (POSITIVE, "positive"),
        (NEGATIVE, "negative"),
        ("The meeting is at 3pm in room 4.", "neutral"),
        ("Not bad at all :)", "positive"),
    ],
)
def test_vader_labels_by_the_compound_score(text: str, label: str) -> None:
    analysis = sentiment_of(text)
    assert analysis.label == label
    assert -1.0 <= analysis.score <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=2000))
def test_any_text_gets_a_label_and_a_score_in_range(text: str) -> None:
    analysis = sentiment_of(text)
    assert analysis.label in ("positive", "negative", "neutral")
    assert -1.0 <= analysis.score <= 1.0
    assert analysis == sentiment_of(text)  # the same text, the same verdict


async def test_a_message_delivered_twice_is_stored_counted_and_remembered_once(
    any_db_url: str,
) -> None:
    message = sent()
    async with step_testers(any_db_url, "ProcessMessage", "AnalyzeSentiment") as (process, analyze):
        await process.call_event(message)
        await process.call_event(message, attempt=2)
        await analyze.call_event(message)
        await analyze.call_event(message)
        stored = await rows(process)
        count = await process.state("messages", "count")
        history = await process.state("messages_history", "general")
        chat = await analyze.runtime.stream("chat").get("general", message["id"])
        analysed = analyze.emitted
    assert len(stored) == 1
    assert (stored[0].text, stored[0].author, stored[0].sentiment) == (
        POSITIVE,
        "user-7",
        "positive",
    )
    assert count == 1
    assert [e["id"] for e in history] == [message["id"]]
    # The repeated analysis finds the sentiment already there: nothing emitted or pushed again.
    assert [e["topic"] for e in analysed] == ["message.analyzed"]
    assert analysed[0]["data"]["label"] == "positive" and analysed[0]["data"]["room"] == "general"
    assert chat is not None and chat.sentiment == "positive"


async def test_analysis_before_processing_still_leaves_one_complete_row(any_db_url: str) -> None:
    message = sent(NEGATIVE, room="support")
    async with step_testers(any_db_url, "ProcessMessage", "AnalyzeSentiment") as (process, analyze):
        await analyze.call_event(message)
        await process.call_event(message)
        await analyze.call_event(message)
        await process.call_event(message)
        stored = await rows(process)
        count = await process.state("messages", "count")
        history = await process.state("messages_history", "support")
    assert len(stored) == 1
    row = stored[0]
    assert (row.room, row.author, row.text) == ("support", "user-7", NEGATIVE)
    assert row.created_at == T0
    assert row.sentiment == "negative" and row.sentiment_score is not None
    assert row.sentiment_score <= -0.05 and row.analyzed_at is not None
    assert count == 1  # AnalyzeSentiment stored it first, so it counted it; ProcessMessage did not
    assert [e["id"] for e in history] == [message["id"]]


async def test_the_history_keeps_the_newest_messages_of_each_room(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.settings._current", Settings(message_history_size=3))
    # Six messages a minute apart, delivered out of order, and one in another room.
    messages = [sent(f"message {n}", at=T0 + timedelta(minutes=n)) for n in range(6)]
    elsewhere = sent("hello", room="random")
    async with step_testers(db_url, "ProcessMessage") as (process,):
        for message in [*messages[3:], elsewhere, *messages[:3]]:
            await process.call_event(message)
        await process.call_event(messages[4])  # a duplicate of a remembered one
        history = await process.state("messages_history")
        count = await process.state("messages", "count")
    assert [e["text"] for e in history["general"]] == ["message 3", "message 4", "message 5"]
    assert [e["text"] for e in history["random"]] == ["hello"]
    assert history["random"][0] == {
        "id": elsewhere["id"],
        "author": "user-7",
        "text": "hello",
        "created_at": T0.isoformat(),
    }
    assert count == 7


async def test_send_message_puts_the_message_on_the_chat_stream_then_analysis_adds_sentiment(
    db_url: str,
) -> None:
    user = {"id": "user-7", "role": "user"}
    async with step_testers(db_url, "SendMessage", "AnalyzeSentiment") as (send, analyze):
        accepted = await send.call_api(body={"text": POSITIVE, "room": "lobby"}, user=user)
        chat = send.runtime.stream("chat")
        message_id = accepted.body["id"]
        before = await chat.get("lobby", message_id)
        [emitted] = send.emitted
        await analyze.call_event(emitted["data"])
        after = await chat.get("lobby", message_id)
    assert accepted.status == 202 and accepted.body == {"id": message_id, "status": "sent"}
    assert emitted["topic"] == "message.sent"
    assert emitted["data"] == {
        "id": message_id,
        "room": "lobby",
        "author": "user-7",
        "text": POSITIVE,
        "created_at": emitted["data"]["created_at"],
    }
    assert before is not None and (before.text, before.sentiment) == (POSITIVE, None)
    assert after is not None and after.sentiment == "positive"
    assert after.sentiment_score is not None and after.sentiment_score > 0.05
    assert after.created_at == before.created_at


async def test_the_same_event_emitted_twice_through_the_runtime_has_one_outcome(
    any_db_url: str,
) -> None:
    message = sent(NEGATIVE)
    async with sample_app(any_db_url) as client:
        runtime = runtime_of(client)
        await runtime.emit("message.sent", message)
        await runtime.emit("message.sent", message)
        await eventually(lambda: settled(runtime, "ProcessMessage", 2))
        await eventually(lambda: settled(runtime, "AnalyzeSentiment", 2))
        listed = (await client.get("/messages", headers={"X-Test-User": "u:user"})).json()
        count = await state(runtime, "messages", "count")
        history = await state(runtime, "messages_history", "general")
    assert listed["total"] == 1
    assert listed["items"][0]["sentiment"] == "negative"
    assert count == 1
    assert [e["id"] for e in history] == [message["id"]]
