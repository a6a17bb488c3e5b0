"""Streams as Server-Sent Events: the same feed as the WebSocket, errors as envelopes, resume."""

from __future__ import annotations

from pathlib import Path

from app.runtime import ManualClock
from tests.runtime.live import live_app, sse
from tests.runtime.stream_steps import CHAT

U2 = {"X-Test-User": "u2"}


async def test_sse_sends_the_items_then_every_change(tmp_path: Path, any_db_url: str) -> None:
    async with live_app(tmp_path, any_db_url, CHAT) as live, live.client() as http:
        await live.runtime.stream("chat").set("r", "old", {"author": "x", "text": "before"})
        async with sse(http, "/streams/chat/r") as events:
            assert events.response.status_code == 200
            assert events.response.headers["content-type"].startswith("text/event-stream")
            first = await events.until("subscribed")
            assert first[0] == {
                "id": 1,
                "event": "message",
                "data": {
                    "stream": "chat",
                    "group_id": "r",
                    "id": "old",
                    "event": "create",
                    "data": {"author": "x", "text": "before", "mood": None},
                    "version": 1,
                },
            }
            assert first[1] == {
                "id": 1,
                "event": "subscribed",
                "data": {"stream": "chat", "group_id": "r", "version": 1, "items": 1},
            }
            await http.post("/post", json={"room": "r", "id": "m", "text": "hey"}, headers=U2)
            created = await events.next(timeout=1.0)
            assert (created["id"], created["data"]["event"], created["data"]["id"]) == (
                2,
                "create",
                "m",
            )
            updated = await events.next()
            assert (updated["id"], updated["data"]["data"]["mood"]) == (3, "calm")
            await http.post("/typing/r", headers=U2)
            typing = await events.next()
            assert typing["id"] is None and typing["data"]["event"] == "custom"


async def test_sse_refusals_are_error_envelopes(tmp_path: Path, db_url: str) -> None:
    async with live_app(tmp_path, db_url, CHAT) as live, live.client() as http:
        anonymous = await http.get("/streams/chat/r")
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "unauthorized"
        assert anonymous.json()["trace_id"] == anonymous.headers["x-trace-id"]
        refused = await http.get("/streams/chat/private-u2", headers={"X-Test-User": "u1"})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        unknown = await http.get("/streams/nope/r", headers={"X-Test-User": "u1"})
        assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
        bad_resume = await http.get(
            "/streams/chat/r", headers={"X-Test-User": "u1", "Last-Event-ID": "yesterday"}
        )
        assert bad_resume.status_code == 400
        assert bad_resume.json()["code"] == "validation_failed"
        assert bad_resume.json()["details"][0]["field"] == "Last-Event-ID"


async def test_sse_resumes_after_last_event_id_with_updates_and_deletes(
    tmp_path: Path, any_db_url: str
) -> None:
    async with live_app(tmp_path, any_db_url, CHAT) as live, live.client() as http:
        chat = live.runtime.stream("chat")
        for item in ("a", "b", "c"):
            await chat.set("r", item, {"author": "x", "text": item})
        async with sse(http, "/streams/chat/r") as events:
            received = await events.until("subscribed")
            await chat.set("r", "a", {"author": "x", "text": "a2"})
            received.append(await events.next())
        last_id = received[-1]["id"]
        assert last_id == 4
        # while the client is away
        await chat.delete("r", "b")
        await chat.set("r", "d", {"author": "x", "text": "d"})
        await chat.set("r", "c", {"author": "x", "text": "c2"})
        async with sse(http, "/streams/chat/r", **{"Last-Event-ID": str(last_id)}) as events:
            resumed = await events.until("subscribed")
        assert [(e["id"], e["data"].get("id"), e["data"].get("event")) for e in resumed] == [
            (5, "b", "delete"),
            (6, "d", "update"),
            (7, "c", "update"),
            (7, None, None),  # the `subscribed` event: resume from here next time
        ]
        assert resumed[2]["data"]["data"]["text"] == "c2"
        # the query parameter does the same, for EventSource's first connection
        async with sse(http, "/streams/chat/r?last_event_id=6") as events:
            assert [e["id"] for e in await events.until("subscribed")] == [7, 7]


async def test_resuming_from_before_purged_deletes_starts_over(tmp_path: Path, db_url: str) -> None:
    clock = ManualClock()
    async with (
        live_app(tmp_path, db_url, CHAT, clock=clock, stream_tombstone_seconds=60) as live,
        live.client() as http,
    ):
        chat = live.runtime.stream("chat")
        await chat.set("r", "a", {"author": "x", "text": "a"})
        await chat.set("r", "b", {"author": "x", "text": "b"})
        await chat.delete("r", "a")  # version 3, a tombstone
        clock.advance(120)
        await chat.delete("r", "b")  # version 4: purges the tombstone of version 3
        await chat.set("r", "c", {"author": "x", "text": "c"})
        async with sse(http, "/streams/chat/r", **{"Last-Event-ID": "3"}) as events:
            assert [e["id"] for e in await events.until("subscribed")] == [4, 5, 5]
        async with sse(http, "/streams/chat/r", **{"Last-Event-ID": "2"}) as events:
            got = await events.until("subscribed")
        assert got[0]["event"] == "reset"
        assert [(e["id"], e["data"].get("id")) for e in got[1:]] == [(5, "c"), (5, None)]
