"""`ctx.streams` inside a handler: reads see the step's own writes; the schema is enforced;
step authors test stream writes with StepTester, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.runtime import StreamError
from app.runtime.testing import StepTester
from tests.runtime.conftest import step_app
from tests.runtime.stream_steps import CHAT
from tests.support import write_steps

READS = {
    **CHAT,
    "reads_step.py": """
        from app.runtime import StreamError
        config = {"name": "Reads", "type": "api", "path": "/reads", "method": "POST"}

        async def handler(req, ctx):
            chat = ctx.streams.chat
            await chat.set("r", "a", {"author": "x", "text": "a"})
            await chat.set("r", "b", {"author": "x", "text": "b"})
            await chat.delete("r", "a")
            await chat.set("r", "a", {"author": "x", "text": "a again"})
            try:
                await chat.set("r", "c", {"author": "x"})
            except StreamError as exc:
                refused = str(exc)
            try:
                ctx.streams.nope
            except AttributeError as exc:
                unknown = str(exc)
            group = await chat.get_group("r")
            return {"status": 200, "body": {
                "order": list(group), "a": (await chat.get("r", "a")).text,
                "missing": await chat.get("r", "c"), "refused": refused, "unknown": unknown}}
    """,
}


async def test_a_handler_reads_its_own_stream_writes_in_change_order(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, READS) as client:
        await client.app.state.runtime.stream("chat").set("r", "old", {"author": "x", "text": "o"})  # type: ignore[attr-defined]
        body = (await client.post("/reads", headers={"X-Test-User": "u1"})).json()
        stored = await client.app.state.runtime.stream("chat").get_group("r")  # type: ignore[attr-defined]
    assert body["order"] == ["old", "b", "a"]
    assert body["a"] == "a again"
    assert body["missing"] is None
    assert (
        "item 'c' does not fit the schema of stream 'chat' (Message): text: Field required"
        in (body["refused"])
    )
    assert body["unknown"] == "no stream named 'nope' (declared streams: chat)"
    assert list(stored) == ["old", "b", "a"]


async def test_bad_groups_ids_and_events_are_refused() -> None:
    from pydantic import BaseModel

    from app.runtime._stream_config import StreamDef, parse_stream_config
    from app.runtime._streams import Stream

    class Item(BaseModel):
        text: str

    stream = Stream(StreamDef(parse_stream_config({"name": "s", "schema": Item}), Path("x")), None)  # type: ignore[arg-type]
    with pytest.raises(StreamError, match="group_id must be a non-empty string"):
        stream.validate("", "a", {"text": "t"})
    with pytest.raises(StreamError, match="id is at most 255"):
        stream.validate("g", "x" * 256, {"text": "t"})


async def test_step_authors_test_stream_writes_with_the_step_tester(tmp_path: Path) -> None:
    steps = write_steps(tmp_path, CHAT)
    async with StepTester("Post", steps_dir=steps) as tester:
        result = await tester.call_api(
            body={"room": "r", "id": "m", "text": "hi"}, user={"id": "u1", "role": "user"}
        )
        assert result.status == 201
        stored = await tester.runtime.stream("chat").get("r", "m")
    assert (stored.author, stored.text) == ("u1", "hi")
    assert tester.emitted[0]["topic"] == "posted"
