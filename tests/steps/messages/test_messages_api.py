"""The messages API over HTTP, with the worker running in-process: send, analyse, list, read."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.accounts import assert_envelope, sign_up
from tests.steps.messages.helpers import NEGATIVE, POSITIVE, USER, sample_app, state
from tests.support import eventually, runtime_of


async def analysed(client: httpx.AsyncClient, message_id: str, headers: dict[str, str]) -> Any:
    reply = await client.get(f"/messages/{message_id}", headers=headers)
    return reply.json() if reply.status_code == 200 and reply.json()["sentiment"] else None


async def test_a_positive_and_a_negative_message_are_labelled_and_listed_newest_first(
    any_db_url: str,
) -> None:
    async with sample_app(any_db_url, test_users=False) as client:
        ada, headers = await sign_up(client, "ada@example.com")
        happy = await client.post("/messages", json={"text": POSITIVE}, headers=headers)
        angry = await client.post(
            "/messages", json={"text": NEGATIVE, "room": "support"}, headers=headers
        )
        assert happy.status_code == angry.status_code == 202, happy.text
        happy_id, angry_id = happy.json()["id"], angry.json()["id"]
        assert happy.json() == {"id": happy_id, "status": "sent"}

        first = await eventually(lambda: analysed(client, happy_id, headers))
        second = await eventually(lambda: analysed(client, angry_id, headers))
        listed = (await client.get("/messages", headers=headers)).json()
        support = (await client.get("/messages?room=support", headers=headers)).json()
        runtime = runtime_of(client)
        count = await state(runtime, "messages", "count")
        history = await state(runtime, "messages_history")
        chat = await runtime.stream("chat").get("general", happy_id)

    assert (first["sentiment"], second["sentiment"]) == ("positive", "negative")
    assert first["sentiment_score"] >= 0.05 and second["sentiment_score"] <= -0.05
    assert first["author"] == ada["id"] and first["room"] == "general"
    assert first["text"] == POSITIVE and first["analyzed_at"] is not None
    assert [m["id"] for m in listed["items"]] == [angry_id, happy_id]  # newest first
    assert [m["sentiment"] for m in listed["items"]] == ["negative", "positive"]
    assert (listed["total"], listed["limit"], listed["offset"]) == (2, 20, 0)
    assert [m["id"] for m in support["items"]] == [angry_id] and support["total"] == 1
    assert count == 2
    assert [e["id"] for e in history["general"]] == [happy_id]
    assert [e["id"] for e in history["support"]] == [angry_id]
    assert (chat.sentiment, chat.author, chat.text) == ("positive", ada["id"], POSITIVE)


async def test_a_page_of_messages_is_cut_by_limit_and_offset(db_url: str) -> None:
    async with sample_app(db_url) as client:
        ids = []
        for n in range(5):
            reply = await client.post("/messages", json={"text": f"note {n}"}, headers=USER)
            ids.append(reply.json()["id"])

        async def all_stored() -> bool:
            listed = await client.get("/messages", headers=USER)
            return bool(listed.json()["total"] == 5)

        await eventually(all_stored)
        page = await client.get("/messages?limit=2&offset=1", headers=USER)
        empty_room = await client.get("/messages?room=nobody-here", headers=USER)
    assert page.status_code == 200
    body = page.json()
    assert [m["id"] for m in body["items"]] == [ids[3], ids[2]]
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 1)
    assert empty_room.json()["items"] == [] and empty_room.json()["total"] == 0


async def test_an_unknown_or_malformed_message_id_is_a_404(db_url: str) -> None:
    async with sample_app(db_url) as client:
        unknown = await client.get(f"/messages/{uuid.uuid4()}", headers=USER)
        malformed = await client.get("/messages/not-a-uuid", headers=USER)
        translated = await client.get("/messages/42", headers={**USER, "Accept-Language": "vi"})
    assert assert_envelope(unknown, 404, "not_found")["error"] == "Message not found."
    assert_envelope(malformed, 404, "not_found")
    assert assert_envelope(translated, 404, "not_found")["error"] == "Không tìm thấy tin nhắn."


@pytest.mark.parametrize(
    ("body", "field", "type_"),
    [
        ({"text": ""}, "text", "string_too_short"),
        ({"text": "x" * 2001}, "text", "string_too_long"),
        ({"text": "   \n "}, "text", "text_blank"),
        ({"text": "nul\x00byte"}, "text", "text_control_characters"),
        ({}, "text", "missing"),
        ({"text": 42}, "text", "string_type"),
        ({"text": "hi", "room": "no spaces please"}, "room", "room_invalid"),
        ({"text": "hi", "room": "r" * 65}, "room", "room_invalid"),
        ({"text": "hi", "room": ""}, "room", "room_invalid"),
        ({"text": "hi", "colour": "red"}, "colour", "extra_forbidden"),
    ],
)
async def test_a_message_that_does_not_fit_is_a_400_naming_the_field(
    db_url: str, body: dict[str, Any], field: str, type_: str
) -> None:
    async with sample_app(db_url) as client:
        reply = await client.post("/messages", json=body, headers=USER)
        listed = await client.get("/messages", headers=USER)
    details = assert_envelope(reply, 400, "validation_failed")["details"]
    assert [(d["field"], d["type"]) for d in details] == [(field, type_)]
    assert listed.json()["total"] == 0


async def test_the_longest_message_and_line_breaks_are_accepted(db_url: str) -> None:
    async with sample_app(db_url) as client:
        longest = await client.post("/messages", json={"text": "x" * 2000}, headers=USER)
        lines = await client.post(
            "/messages", json={"text": "two\nlines", "room": "Team_A-1"}, headers=USER
        )
    assert longest.status_code == lines.status_code == 202


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "offset=-1", "limit=abc", "room=bad%20room"]
)
async def test_a_bad_page_query_is_a_400(db_url: str, query: str) -> None:
    async with sample_app(db_url) as client:
        reply = await client.get(f"/messages?{query}", headers=USER)
    assert_envelope(reply, 400, "validation_failed")


async def test_the_messages_api_needs_a_signed_in_user(db_url: str) -> None:
    async with sample_app(db_url) as client:
        sent = await client.post("/messages", json={"text": "hello"})
        listed = await client.get("/messages")
        one = await client.get(f"/messages/{uuid.uuid4()}")
    for reply in (sent, listed, one):
        assert_envelope(reply, 401, "unauthorized")
