"""The sample polyglot flow, end to end over HTTP and the worker: TypeScript -> Python -> JS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.runtime import Runtime
from app.runtime._unit import Unit
from steps.polyglot.service import analyze
from tests.conftest import make_settings, running_app
from tests.node_support import needs_node
from tests.runtime.conftest import HeaderUser
from tests.support import eventually

USER = {"X-Test-User": "user-7:user"}


@asynccontextmanager
async def sample_app(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real steps folder; `X-Test-User` stands in for a signed-in user."""
    async with running_app(make_settings(db_url), middleware=[HeaderUser]) as client:
        yield client


@needs_node
async def test_a_message_goes_from_typescript_to_python_and_back_to_javascript(
    any_db_url: str,
) -> None:
    async with sample_app(any_db_url) as client:
        sent = await client.post(
            "/polyglot/messages",
            json={"text": "Does the polyglot flow work?"},
            headers={**USER, "X-Trace-Id": "trace-polyglot"},
        )
        message_id = sent.json()["id"]

        async def analysed() -> Any:
            reply = await client.get(f"/polyglot/messages/{message_id}", headers=USER)
            return reply.json() if reply.json().get("status") == "analyzed" else None

        message = await eventually(analysed)
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        stats = await Unit(runtime.engine, runtime.clock.now).get_group("polyglot_stats")
        languages = {s.name: s.handler.language for s in runtime.registry.steps if s.handler}
    assert sent.status_code == 202
    assert sent.json() == {"id": message_id, "status": "sent"}
    assert message["text"] == "Does the polyglot flow work?"
    assert message["room"] == "general" and message["sender"] == "user-7"
    assert message["analysis"] == {"words": 5, "tone": "question", "language": "latin"}
    assert stats == {"question": 1}
    assert languages["PolyglotSendMessage"] == "typescript"
    assert languages["PolyglotAnalyzeMessage"] == "python"
    assert languages["PolyglotRecordAnalysis"] == "javascript"


@needs_node
async def test_the_polyglot_endpoints_answer_errors_with_the_envelope(db_url: str) -> None:
    async with sample_app(db_url) as client:
        anonymous = await client.post("/polyglot/messages", json={"text": "hi"})
        empty = await client.post("/polyglot/messages", json={"text": ""}, headers=USER)
        extra = await client.post(
            "/polyglot/messages", json={"text": "hi", "colour": "red"}, headers=USER
        )
        missing = await client.get("/polyglot/messages/nope", headers=USER)
    assert anonymous.status_code == 401
    assert empty.status_code == 400 and empty.json()["details"][0]["field"] == "text"
    assert extra.status_code == 400 and extra.json()["details"][0]["field"] == "colour"
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_the_python_analysis() -> None:
    assert analyze("Hello there!") == {"words": 2, "tone": "exclamation", "language": "latin"}
    assert analyze("こんにちは、世界") == {"words": 2, "tone": "statement", "language": "cjk"}
    assert analyze("...") == {"words": 0, "tone": "statement", "language": "unknown"}
