"""AI content moderation end to end: POST /content, the moderator in the in-process worker,
GET /content/{id} showing the verdict (the article's AIContentModerator)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.runtime._schema import deliveries, events
from app.runtime._unit import Unit
from tests.accounts import admin_settings, assert_envelope, sign_in_admin, sign_up
from tests.conftest import running_app
from tests.support import eventually, runtime_of

CLEAN = "Thanks for the lovely article, it helped me a lot!"
PROFANE = "This shit finally works, thank you!"
NEGATIVE = "I hate this, it is the worst, awful and terrible"
MILDLY_NEGATIVE = "This is a bit disappointing."  # VADER compound -0.49


@asynccontextmanager
async def content_app(db_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(admin_settings(db_url, **overrides)) as client:
        yield client


async def submit(client: httpx.AsyncClient, headers: dict[str, str], text: str) -> str:
    response = await client.post("/content", json={"text": text}, headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"id": body["id"], "status": "pending"}
    return str(body["id"])


async def verdict(
    client: httpx.AsyncClient, headers: dict[str, str], content_id: str
) -> dict[str, Any]:
    """GET /content/{id} until the moderator is done with it."""

    async def moderated() -> dict[str, Any] | None:
        response = await client.get(f"/content/{content_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] != "pending" else None

    result: dict[str, Any] = await eventually(moderated)
    return result


async def approved_count(client: httpx.AsyncClient) -> Any:
    runtime = runtime_of(client)
    return await Unit(runtime.engine, runtime.clock.now).get("content_stats", "approved")


async def test_clean_text_is_approved_profanity_and_strong_negativity_are_flagged(
    any_db_url: str,
) -> None:
    async with content_app(any_db_url) as client:
        _, ada = await sign_up(client, "ada@example.com")
        clean_id = await submit(client, ada, CLEAN)
        profane_id = await submit(client, ada, PROFANE)
        negative_id = await submit(client, ada, NEGATIVE)
        clean = await verdict(client, ada, clean_id)
        profane = await verdict(client, ada, profane_id)
        negative = await verdict(client, ada, negative_id)
        published = await eventually(lambda: approved_count(client))
        welcome = await client.get("/content", headers={**ada, "Accept-Language": "vi"})

    assert clean["status"] == "approved" and clean["reason"] is None
    assert clean["sentiment_score"] > 0.5
    assert clean["text"] == CLEAN and clean["id"] == clean_id
    assert clean["moderated_at"] is not None and clean["moderated_at"] >= clean["created_at"]
    assert profane["status"] == "flagged" and profane["reason"] == "profanity"
    assert negative["status"] == "flagged" and negative["reason"] == "negative_sentiment"
    assert negative["sentiment_score"] <= -0.6
    assert published == 1
    assert welcome.status_code == 200
    assert welcome.json() == {"message": "Chào mừng", "lang": "vi"}


async def test_the_verdict_is_shown_to_its_author_and_admins_only(db_url: str) -> None:
    async with content_app(db_url) as client:
        _, ada = await sign_up(client, "ada@example.com")
        _, bob = await sign_up(client, "bob@example.com")
        admin = await sign_in_admin(client)
        content_id = await submit(client, ada, CLEAN)
        await verdict(client, ada, content_id)
        by_admin = await client.get(f"/content/{content_id}", headers=admin)
        by_bob = await client.get(
            f"/content/{content_id}", headers={**bob, "Accept-Language": "ja"}
        )
        unknown = await client.get(f"/content/{uuid.uuid4()}", headers=ada)
        not_a_uuid = await client.get("/content/not-a-uuid", headers=ada)
        anonymous = await client.get(f"/content/{content_id}")
        anonymous_post = await client.post("/content", json={"text": CLEAN})

    assert by_admin.status_code == 200 and by_admin.json()["status"] == "approved"
    assert assert_envelope(by_bob, 404, "not_found")["error"] == "コンテンツが見つかりません。"
    assert assert_envelope(unknown, 404, "not_found")["error"] == "Content not found."
    assert_envelope(not_a_uuid, 404, "not_found")
    assert_envelope(anonymous, 401, "unauthorized")
    assert_envelope(anonymous_post, 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({"text": ""}, "string_too_short"),
        ({"text": "   \n\t "}, "string_too_short"),
        ({"text": "x" * 5001}, "string_too_long"),
        ({"text": "nul \x00 inside"}, "text_control_characters"),
        ({"text": 42}, "string_type"),
        ({}, "missing"),
        ({"text": "hi", "colour": "red"}, "extra_forbidden"),
    ],
)
async def test_bad_text_is_a_400_naming_the_field(
    db_url: str, body: dict[str, Any], error_type: str
) -> None:
    async with content_app(db_url) as client:
        _, ada = await sign_up(client, "ada@example.com")
        response = await client.post("/content", json=body, headers=ada)
    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert details[0]["type"] == error_type
    assert details[0]["field"] in ("text", "colour")


async def test_several_lines_of_5000_characters_are_accepted(db_url: str) -> None:
    text = "first line\nsecond line\t" + "x" * (5000 - 24)
    async with content_app(db_url) as client:
        _, ada = await sign_up(client, "ada@example.com")
        content_id = await submit(client, ada, f"  {text}  ")
        item = await verdict(client, ada, content_id)
    assert item["text"] == text  # trimmed, lines kept
    assert item["status"] == "approved"


@pytest.mark.parametrize(
    ("threshold", "status", "reason"),
    [(-0.6, "approved", None), (-0.3, "flagged", "negative_sentiment")],
)
async def test_the_negative_threshold_follows_the_setting(
    db_url: str, threshold: float, status: str, reason: str | None
) -> None:
    async with content_app(db_url, moderation_negative_threshold=threshold) as client:
        _, ada = await sign_up(client, "ada@example.com")
        item = await verdict(client, ada, await submit(client, ada, MILDLY_NEGATIVE))
    assert -0.6 < item["sentiment_score"] <= -0.3
    assert (item["status"], item["reason"]) == (status, reason)


async def test_content_submitted_delivered_twice_gives_one_verdict_and_one_publication(
    any_db_url: str,
) -> None:
    async with content_app(any_db_url) as client:
        user, ada = await sign_up(client, "ada@example.com")
        content_id = await submit(client, ada, CLEAN)
        first = await verdict(client, ada, content_id)
        assert await eventually(lambda: approved_count(client)) == 1

        runtime = runtime_of(client)
        again = {"id": content_id, "text": CLEAN, "author": user["id"]}
        event_id = await runtime.emit("content.submitted", again)

        async def moderator_done() -> bool:
            async with runtime.engine.connect() as conn:
                status = await conn.scalar(
                    select(deliveries.c.status).where(
                        deliveries.c.event_id == event_id,
                        deliveries.c.step == "AIContentModerator",
                    )
                )
            return status == "done"

        await eventually(moderator_done)
        second = (await client.get(f"/content/{content_id}", headers=ada)).json()
        count = await approved_count(client)
        async with runtime.engine.connect() as conn:
            approvals = await conn.scalar(
                select(func.count()).select_from(events).where(events.c.topic == "content.approved")
            )

    assert second == first  # same verdict, same moderation time: the row was left as it was
    assert approvals == 1  # the duplicate delivery emitted nothing
    assert count == 1
