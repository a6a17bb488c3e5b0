"""`python -m app graph` shows the messages flow, every topic with a subscriber."""

from __future__ import annotations

import json

from tests.support import run_cli


def test_the_graph_lists_the_messages_flow_without_warnings() -> None:
    as_json = run_cli("graph", "--format", "json")
    as_text = run_cli("graph")
    assert as_json.returncode == as_text.returncode == 0, as_json.stderr
    graph = json.loads(as_json.stdout)
    flow = {s["name"]: s["type"] for s in graph["steps"] if "messages" in s["flows"]}
    assert flow == {
        "SendMessage": "api",
        "ListMessages": "api",
        "GetMessage": "api",
        "ProcessMessage": "event",
        "AnalyzeSentiment": "event",
        "NotifyClients": "noop",
        "CleanupOldMessages": "cron",
    }
    edges = {(e["from"], e["topic"], e["to"]) for e in graph["edges"]}
    assert {
        ("SendMessage", "message.sent", "ProcessMessage"),
        ("SendMessage", "message.sent", "AnalyzeSentiment"),
        ("AnalyzeSentiment", "message.analyzed", "NotifyClients"),
    } <= edges
    assert not [w for w in graph["warnings"] if "message." in w]
    assert "chat" in {s["name"] for s in graph["streams"]}
    assert "[api] SendMessage  POST /messages (auth: user)  flows: messages" in as_text.stdout
    assert "[cron] CleanupOldMessages  '0 0 * * *' UTC  flows: messages" in as_text.stdout
    assert "warning: topic 'message." not in as_text.stderr
