"""Stream declarations: discovered like steps, refused with file, field and reason, graphed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.runtime import StepConfigError, StreamConfig, discover
from tests.runtime.stream_steps import CHAT
from tests.support import run_cli, write_steps

SCHEMA = "from pydantic import BaseModel\nclass Item(BaseModel):\n    text: str\n"


def problems_of(tmp_path: Path, files: dict[str, str]) -> str:
    with pytest.raises(StepConfigError) as info:
        discover(write_steps(tmp_path, files))
    return str(info.value)


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ("{'schema': Item}", "config.name", "missing"),
        ("{'name': 'chat'}", "config.schema", "missing"),
        ("{'name': 'chat', 'schema': dict}", "config.schema", "pydantic model class"),
        ("{'name': 'chat-room', 'schema': Item}", "config.name", "should match pattern"),
        ("{'name': 'chat', 'schema': Item, 'colour': 1}", "config.colour", "Extra inputs"),
        (
            "{'name': 'chat', 'schema': Item, 'authorize': lambda user: True}",
            "config.authorize",
            "two arguments (user, group_id)",
        ),
        ("{'name': 'chat', 'schema': Item, 'authorize': 3}", "config.authorize", "callable"),
        ("['chat']", "config", "must be a dict or a StreamConfig"),
    ],
)
def test_a_bad_stream_config_stops_start_up_with_file_field_and_reason(
    tmp_path: Path, config: str, field: str, reason: str
) -> None:
    message = problems_of(tmp_path, {"chat_stream.py": f"{SCHEMA}config = {config}\n"})
    assert "chat_stream.py: " + field in message
    assert reason in message


def test_missing_config_import_errors_and_duplicate_names_are_reported_together(
    tmp_path: Path,
) -> None:
    message = problems_of(
        tmp_path,
        {
            "a/chat_stream.py": f"{SCHEMA}config = {{'name': 'chat', 'schema': Item}}\n",
            "b/chat_stream.py": f"{SCHEMA}config = {{'name': 'chat', 'schema': Item}}\n",
            "empty_stream.py": "x = 1\n",
            "broken_stream.py": "import nowhere_to_be_found\n",
        },
    )
    assert "b/chat_stream.py: config.name: duplicate stream name 'chat'" in message
    assert "empty_stream.py: config: missing" in message
    assert "broken_stream.py: cannot be imported: ModuleNotFoundError" in message


def test_a_typed_config_is_accepted(tmp_path: Path) -> None:
    registry = discover(
        write_steps(
            tmp_path,
            {
                "feed_stream.py": f"{SCHEMA}from app.runtime import StreamConfig\n"
                "config = StreamConfig(name='feed', schema=Item)\n"
            },
        )
    )
    assert [s.name for s in registry.streams] == ["feed"]
    assert isinstance(registry.streams[0].config, StreamConfig)


def test_the_graph_shows_streams_as_text_json_and_mermaid(tmp_path: Path) -> None:
    env = {"STEPS_DIR": str(write_steps(tmp_path, CHAT))}
    as_json = json.loads(run_cli("graph", "--format", "json", env=env).stdout)
    [chat] = as_json["streams"]
    assert chat["name"] == "chat"
    assert chat["schema_name"] == "Message"
    assert chat["authorize"] == "may_follow"
    assert chat["flows"] == ["chat"]
    assert set(chat["schema"]["properties"]) == {"author", "text", "mood"}
    text = run_cli("graph", env=env).stdout
    assert "[stream] chat  items: Message  authorize: may_follow  flows: chat" in text
    mermaid = run_cli("graph", "--format", "mermaid", env=env).stdout
    assert 'stream_chat[("chat<br/><small>stream</small>")]' in mermaid
