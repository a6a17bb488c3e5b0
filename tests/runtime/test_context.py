"""ctx.emit, ctx.logger and ctx.trace_id as a handler sees them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.runtime import EmitError, add_log_sink, remove_log_sink
from app.runtime.testing import StepTester
from tests.runtime.conftest import step_app
from tests.support import write_steps

STEPS = {
    "send_step.py": """
        config = {"name": "Send", "type": "api", "path": "/send", "method": "POST",
                  "auth": "public", "emits": ["note.sent"]}
        async def handler(req, ctx):
            ctx.logger.info("sending", size=len(req.body["text"]))
            await ctx.emit({"topic": req.body.get("topic", "note.sent"),
                            "data": {"text": req.body["text"]}})
            return {"status": 202, "body": {"trace_id": ctx.trace_id}}
    """,
    "note_step.py": """
        from pydantic import BaseModel, Field
        class Note(BaseModel):
            text: str = Field(min_length=1)
        config = {"name": "Note", "type": "event", "subscribes": ["note.sent"], "input": Note}
        async def handler(event, ctx):
            pass
    """,
}


async def test_an_undeclared_emit_names_the_step_and_the_topic(tmp_path: Path) -> None:
    steps = write_steps(tmp_path, STEPS)
    async with StepTester("Send", steps_dir=steps) as tester:
        with pytest.raises(EmitError) as info:
            await tester.call_api(body={"text": "hi", "topic": "note.deleted"})
    assert "'Send'" in str(info.value)
    assert "'note.deleted'" in str(info.value)
    assert "note.sent" in str(info.value)  # what it may emit


async def test_an_emit_that_does_not_fit_a_subscriber_fails_the_emitter(tmp_path: Path) -> None:
    steps = write_steps(tmp_path, STEPS)
    async with StepTester("Send", steps_dir=steps) as tester:
        with pytest.raises(EmitError) as info:
            await tester.call_api(body={"text": ""})
        assert tester.emitted == []
    assert "'Note'" in str(info.value) and "text" in str(info.value)


async def test_emits_are_recorded_by_the_tester(tmp_path: Path) -> None:
    steps = write_steps(tmp_path, STEPS)
    async with StepTester("Send", steps_dir=steps) as tester:
        result = await tester.call_api(body={"text": "hello"})
    assert result.status == 202
    assert tester.emitted == [
        {"topic": "note.sent", "data": {"text": "hello"}, "delay": 0.0, "message_group_id": None}
    ]


async def test_log_records_carry_the_trace_id_and_the_step(tmp_path: Path, db_url: str) -> None:
    records: list[dict[str, Any]] = []
    add_log_sink(records.append)
    try:
        async with step_app(tmp_path, db_url, STEPS, log_level="INFO") as client:
            response = await client.post(
                "/send", json={"text": "hello"}, headers={"X-Trace-Id": "trace-log-0001"}
            )
    finally:
        remove_log_sink(records.append)
    assert response.json() == {"trace_id": "trace-log-0001"}
    sending = [r for r in records if r.get("event") == "sending"]
    assert sending, records
    assert sending[0]["trace_id"] == "trace-log-0001"
    assert sending[0]["step"] == "Send"
    assert sending[0]["size"] == 5
    assert sending[0]["level"] == "info"
