"""CleanupOldMessages: what is older than MESSAGE_RETENTION_DAYS goes (table, history, stream),
what is newer stays. Time is moved by a ManualClock, never waited for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.runtime import ManualClock, add_log_sink, remove_log_sink
from app.runtime.testing import StepTester
from steps.messages.models import Message
from tests.steps.messages.helpers import USER, sample_app, state, step_testers
from tests.support import eventually, runtime_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 86_400.0


async def send(testers: dict[str, StepTester], text: str, room: str = "general") -> str:
    """SendMessage, then both subscribers of `message.sent`, as the worker would run them."""
    sender = testers["SendMessage"]
    accepted = await sender.call_api(body={"text": text, "room": room}, user={"id": "ann"})
    event = sender.emitted.pop()
    await testers["ProcessMessage"].call_event(event["data"])
    await testers["AnalyzeSentiment"].call_event(event["data"])
    return str(accepted.body["id"])


async def stored_ids(tester: StepTester) -> set[str]:
    async with tester.runtime.engine.connect() as conn:
        return {str(i) for i in (await conn.execute(select(Message.id))).scalars()}


async def test_messages_older_than_the_retention_are_removed_and_newer_ones_kept(
    any_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESSAGE_RETENTION_DAYS", "7")
    monkeypatch.setattr("app.settings._current", None)
    clock = ManualClock(start=T0.timestamp())
    names = ("SendMessage", "ProcessMessage", "AnalyzeSentiment", "CleanupOldMessages")
    async with step_testers(any_db_url, *names, clock=clock) as found:
        testers = dict(zip(names, found, strict=True))
        old = await send(testers, "from the first day")
        old_elsewhere = await send(testers, "an old one elsewhere", room="ops")
        clock.advance(1 * DAY)
        edge = await send(testers, "exactly seven days old at the clean-up")
        clock.advance(2 * DAY)
        recent = await send(testers, "from the third day")
        clock.advance(5 * DAY)  # now T0 + 8 days: the cutoff is T0 + 1 day

        cleanup = testers["CleanupOldMessages"]
        await cleanup.call_cron()
        kept = await stored_ids(cleanup)
        history = await cleanup.state("messages_history")
        count = await cleanup.state("messages", "count")
        chat = cleanup.runtime.stream("chat")
        general = set(await chat.get_group("general"))
        ops = await chat.get_group("ops")

        clock.advance(1)  # one second later the edge message is past the retention too
        await cleanup.call_cron()
        kept_after = await stored_ids(cleanup)
        history_after = await cleanup.state("messages_history")

    assert kept == {edge, recent}
    assert [e["id"] for e in history["general"]] == [edge, recent]
    assert "ops" not in history  # a room whose history is empty loses its key
    assert general == {edge, recent} and ops == {}
    assert old not in general and old_elsewhere not in ops
    assert count == 4  # the count is of every message ever stored
    assert kept_after == {recent}
    assert [e["id"] for e in history_after["general"]] == [recent]


async def test_the_daily_cron_run_by_the_runtime_logs_how_many_it_removed(db_url: str) -> None:
    clock = ManualClock(start=T0.timestamp())
    records: list[dict[str, Any]] = []
    add_log_sink(records.append)
    try:
        async with sample_app(db_url, clock=clock, log_level="INFO") as client:
            old = await post_and_wait(client, "an old message")
            clock.advance(7 * DAY)
            new = await post_and_wait(client, "a new message")
            clock.advance(1 * DAY)
            await runtime_of(client).fire_cron("CleanupOldMessages")

            async def only_the_new_one() -> Any:
                listed = (await client.get("/messages", headers=USER)).json()
                return [m["id"] for m in listed["items"]] == [new]

            await eventually(only_the_new_one)
            history = await state(runtime_of(client), "messages_history", "general")
            gone = await client.get(f"/messages/{old}", headers=USER)
    finally:
        remove_log_sink(records.append)
    assert gone.status_code == 404
    assert [e["id"] for e in history] == [new]
    removed = [r for r in records if r.get("event") == "old messages removed"]
    assert removed and removed[0]["step"] == "CleanupOldMessages"
    # The scheduler may also have run its own midnight firing: together they removed one.
    assert sum(r["removed"] for r in removed) == 1


async def post_and_wait(client: httpx.AsyncClient, text: str) -> str:
    sent = await client.post("/messages", json={"text": text}, headers=USER)
    message_id = str(sent.json()["id"])

    async def analysed() -> bool:
        reply = await client.get(f"/messages/{message_id}", headers=USER)
        return reply.status_code == 200 and reply.json()["sentiment"] is not None

    await eventually(analysed)
    return message_id
