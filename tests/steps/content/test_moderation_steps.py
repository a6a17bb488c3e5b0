"""The moderation steps one at a time (StepTester, on the run's database) and the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import create_engine
from app.runtime import ManualClock
from app.runtime.testing import StepTester
from app.security import Principal
from steps.content import moderation
from steps.content.models import ContentItem
from steps.content.moderation import Verdict, moderate
from tests.conftest import make_settings

START = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(db_url))
    yield engine
    await engine.dispose()


async def pending_item(engine: AsyncEngine, text: str, author: str = "user-1") -> ContentItem:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        item = ContentItem(author=author, text=text, status="pending", created_at=START)
        session.add(item)
        await session.commit()
    return item


async def stored(engine: AsyncEngine, content_id: uuid.UUID) -> ContentItem:
    async with AsyncSession(engine) as session:
        item = await session.get(ContentItem, content_id)
        assert item is not None
        return item


async def test_the_moderator_writes_the_verdict_once_and_emits_once(engine: AsyncEngine) -> None:
    item = await pending_item(engine, "I hate this, it is the worst, awful and terrible")
    event = {"id": str(item.id), "text": item.text, "author": item.author}
    clock = ManualClock(START.timestamp() + 60)
    async with StepTester("AIContentModerator", engine=engine, clock=clock) as tester:
        await tester.call_event(event)
        first = await stored(engine, item.id)
        clock.advance(3600)
        await tester.call_event(event, attempt=1)
        second = await stored(engine, item.id)

    assert [e["topic"] for e in tester.emitted] == ["content.flagged"]
    assert tester.emitted[0]["data"] == {
        "id": str(item.id),
        "reason": "negative_sentiment",
        "score": first.sentiment_score,
    }
    assert (first.status, first.reason) == ("flagged", "negative_sentiment")
    assert first.moderated_at == datetime(2030, 5, 1, 9, 1, tzinfo=UTC)
    assert (second.status, second.reason, second.sentiment_score, second.moderated_at) == (
        first.status,
        first.reason,
        first.sentiment_score,
        first.moderated_at,
    )


async def test_the_moderator_skips_an_event_whose_row_does_not_exist(engine: AsyncEngine) -> None:
    async with StepTester("AIContentModerator", engine=engine) as tester:
        await tester.call_event({"id": str(uuid.uuid4()), "text": "hello", "author": "user-1"})
    assert tester.emitted == []


async def test_publishing_the_same_approval_twice_counts_it_once(engine: AsyncEngine) -> None:
    content_id = str(uuid.uuid4())
    async with StepTester("PublishContent", engine=engine) as tester:
        await tester.call_event({"id": content_id, "score": 0.8})
        await tester.call_event({"id": content_id, "score": 0.8})
        await tester.call_event({"id": str(uuid.uuid4()), "score": 0.1})
        count = await tester.state("content_stats", "approved")
        mark = await tester.state("content_published", content_id)
    assert count == 2
    assert mark["score"] == 0.8 and mark["published_at"]
    assert tester.emitted == []


async def test_submit_content_stores_a_pending_row_and_emits_content_submitted(
    engine: AsyncEngine,
) -> None:
    async with StepTester("SubmitContent", engine=engine) as tester:
        user = Principal(id="user-9", email="user9@example.com", role="user")
        result = await tester.call_api(body={"text": "  Hello there  "}, user=user)
    item = await stored(engine, uuid.UUID(result.body["id"]))
    assert result.status == 202 and result.body["status"] == "pending"
    assert (item.status, item.author, item.text) == ("pending", "user-9", "Hello there")
    assert tester.emitted[0]["topic"] == "content.submitted"
    assert tester.emitted[0]["data"] == {
        "id": str(item.id),
        "text": "Hello there",
        "author": "user-9",
    }


@pytest.mark.parametrize(
    ("text", "threshold", "expected"),
    [
        ("What a wonderful, helpful community!", -0.6, ("approved", None)),
        ("Hello world", -0.6, ("approved", None)),
        ("You absolute dumbass", -0.6, ("flagged", "profanity")),
        ("sh1t happens", -0.6, ("flagged", "profanity")),
        (
            "I hate this, it is the worst, awful and terrible",
            -0.6,
            ("flagged", "negative_sentiment"),
        ),
        ("This is a bit disappointing.", -0.6, ("approved", None)),
        ("This is a bit disappointing.", -0.3, ("flagged", "negative_sentiment")),
        ("I hate this, it is the worst, awful and terrible", -1.0, ("approved", None)),
        # A word containing a listed word is not flagged (the Scunthorpe problem avoided).
        ("Our class assignment is in Scunthorpe", -0.6, ("approved", None)),
    ],
)
def test_the_verdict(text: str, threshold: float, expected: tuple[str, str | None]) -> None:
    verdict = moderate(text, negative_threshold=threshold)
    assert (verdict.status, verdict.reason) == expected
    assert -1.0 <= verdict.score <= 1.0


def test_profanity_wins_over_negative_sentiment_and_the_score_is_kept() -> None:
    verdict = moderate("I hate this shit, it is awful and terrible", negative_threshold=-0.6)
    assert verdict == Verdict("flagged", "profanity", verdict.score)
    assert verdict.score <= -0.6


def test_the_models_load_once_per_process_apart_from_the_packages_global_filter() -> None:
    from better_profanity import profanity

    assert moderation.profanity_filter() is moderation.profanity_filter()
    assert moderation.sentiment_analyzer() is moderation.sentiment_analyzer()
    assert moderation.profanity_filter() is not profanity
