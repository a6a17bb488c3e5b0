"""The messages feature's logic: store messages, analyse their sentiment, list, expire them.

ProcessMessage and AnalyzeSentiment both subscribe to `message.sent`, run in either order and
may each run more than once for one event. So both *upsert* the row by the message's id, and
whichever of them creates the row also counts the message and adds it to its room's history, in
the same transaction: the primary key decides, exactly once, who that is. The sentiment is
only ever written by AnalyzeSentiment, and an upsert without one never clears it.

Services take a session (and `ctx.state`) and never commit: the step's unit of work commits
the row, the state writes and the emits together, or none of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.fields import parse_uuid
from app.runtime import NotFound, State
from steps.messages.models import Message
from steps.messages.schemas import MessageSent, Sentiment

if TYPE_CHECKING:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# State: `messages/count` counts every message ever stored (cleanup does not lower it);
# `messages_history/<room>` holds the room's newest messages, oldest first.
COUNT_GROUP, COUNT_KEY = "messages", "count"
HISTORY_GROUP = "messages_history"

# VADER's own thresholds on the compound score (its authors' recommendation).
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05


def message_not_found() -> NotFound:
    return NotFound(message_key="error.message_not_found")


def author_of(user: Any) -> str:
    """The id of the signed-in user (a Principal, or a dict in tests)."""
    value = user.get("id") if isinstance(user, dict) else getattr(user, "id", None)
    if not value:
        raise TypeError("a message needs a signed-in author")
    return str(value)


def new_message(text: str, room: str, author: str, now: datetime) -> MessageSent:
    """The `message.sent` payload for a message accepted now (its id is chosen here)."""
    return MessageSent(id=uuid.uuid4(), room=room, author=author, text=text, created_at=now)


# -- sentiment -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Analysis:
    label: Sentiment
    score: float


@cache
def analyzer() -> SentimentIntensityAnalyzer:
    """VADER, loaded once per process on first use (its lexicon ships inside the package)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def label_for(compound: float) -> Sentiment:
    if compound >= POSITIVE_AT:
        return "positive"
    if compound <= NEGATIVE_AT:
        return "negative"
    return "neutral"


def sentiment_of(text: str) -> Analysis:
    compound = float(analyzer().polarity_scores(text)["compound"])
    return Analysis(label_for(compound), compound)


async def analyze(text: str) -> Analysis:
    """The sentiment of `text`, computed in a thread (loading the lexicon takes a moment, and
    2,000 characters of scoring should not hold the event loop)."""
    return await asyncio.to_thread(sentiment_of, text)


# -- storing ---------------------------------------------------------------------------------------


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert


def _row(message: MessageSent) -> dict[str, Any]:
    return {
        "id": message.id,
        "room": message.room,
        "author": message.author,
        "text": message.text,
        "created_at": message.created_at,
    }


async def _insert_if_new(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert the row unless one with its id exists; True when this call created it."""
    statement = (
        _insert(session)(Message)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Message.id])
        .returning(Message.id)
    )
    return (await session.execute(statement)).first() is not None


def history_entry(message: MessageSent) -> dict[str, str]:
    return {
        "id": str(message.id),
        "author": message.author,
        "text": message.text,
        "created_at": _iso(message.created_at),
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _when(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["created_at"])


async def _count_and_remember(state: State, message: MessageSent, history_size: int) -> None:
    entry = history_entry(message)

    def remember(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        kept = [e for e in history or [] if e.get("id") != entry["id"]]
        kept.append(entry)
        kept.sort(key=_when)  # deliveries may come out of order
        return kept[-history_size:]

    await state.increment(COUNT_GROUP, COUNT_KEY)
    await state.update(HISTORY_GROUP, message.room, remember)


async def store_message(
    session: AsyncSession, state: State, message: MessageSent, *, history_size: int
) -> bool:
    """ProcessMessage: store the message unless it is stored already; when this call stores
    it, count it and add it to the room's history. True when it was new."""
    created = await _insert_if_new(session, _row(message))
    if created:
        await _count_and_remember(state, message, history_size)
    return created


async def store_sentiment(
    session: AsyncSession,
    state: State,
    message: MessageSent,
    analysis: Analysis,
    *,
    now: datetime,
    history_size: int,
) -> bool:
    """AnalyzeSentiment: give the message its sentiment, storing (and counting) the message
    first when ProcessMessage has not yet. True when the stored sentiment changed, False when
    it already was this one (a repeated delivery)."""
    verdict = {"sentiment": analysis.label, "sentiment_score": analysis.score, "analyzed_at": now}
    if await _insert_if_new(session, {**_row(message), **verdict}):
        await _count_and_remember(state, message, history_size)
        return True
    changed = await session.execute(
        update(Message)
        .where(
            Message.id == message.id,
            or_(
                Message.sentiment.is_(None),
                Message.sentiment_score.is_(None),
                Message.sentiment != analysis.label,
                Message.sentiment_score != analysis.score,
            ),
        )
        .values(**verdict)
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def chat_item(message: MessageSent, analysis: Analysis | None = None) -> dict[str, Any]:
    """The message as the `chat` stream carries it (see chat_stream.py)."""
    return {
        "id": str(message.id),
        "author": message.author,
        "text": message.text,
        "created_at": message.created_at,
        "sentiment": analysis.label if analysis else None,
        "sentiment_score": analysis.score if analysis else None,
    }


# -- reading ---------------------------------------------------------------------------------------


async def list_messages(
    session: AsyncSession, *, limit: int, offset: int, room: str | None = None
) -> tuple[list[Message], int]:
    """One page of messages, newest first, and how many there are in all."""
    where = [Message.room == room] if room is not None else []
    total = await session.scalar(select(func.count()).select_from(Message).where(*where)) or 0
    rows = await session.scalars(
        select(Message)
        .where(*where)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total


async def get_message(session: AsyncSession, message_id: Any) -> Message:
    """The message, or 404 (an id that is not a UUID cannot exist either)."""
    parsed = parse_uuid(message_id)
    message = await session.get(Message, parsed) if parsed is not None else None
    if message is None:
        raise message_not_found()
    return message


# -- retention -------------------------------------------------------------------------------------


async def delete_messages_before(
    session: AsyncSession, cutoff: datetime
) -> Sequence[tuple[uuid.UUID, str]]:
    """Delete every message created before `cutoff`; returns the (id, room) of each."""
    result = await session.execute(
        delete(Message)
        .where(Message.created_at < cutoff)
        .returning(Message.id, Message.room)
        .execution_options(synchronize_session=False)
    )
    return [(row.id, row.room) for row in result]


async def prune_history(state: State, cutoff: datetime) -> int:
    """Drop the entries created before `cutoff` from every room's history (a room left with
    none loses its key); returns how many were dropped."""
    dropped = 0

    def prune(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        nonlocal dropped
        kept = [e for e in history or [] if _when(e) >= cutoff]
        dropped += len(history or []) - len(kept)
        return kept

    for room, history in (await state.get_group(HISTORY_GROUP)).items():
        if not any(_when(e) < cutoff for e in history):
            continue
        if not await state.update(HISTORY_GROUP, room, prune):
            await state.delete(HISTORY_GROUP, room)
    return dropped
