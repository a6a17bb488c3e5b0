"""The command line: graph, migrate, and `new step` writing a step whose test passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from tests.support import ROOT, run_cli, write_steps

FLOW = {
    "create_step.py": """
        config = {"name": "CreateThing", "type": "api", "path": "/things", "method": "POST",
                  "emits": ["thing.created", "thing.audited"], "flows": ["things"]}
        async def handler(req, ctx):
            return {"status": 201, "body": {}}
    """,
    "index_step.py": """
        config = {"name": "IndexThing", "type": "event", "subscribes": ["thing.created"],
                  "emits": [], "flows": ["things"]}
        async def handler(event, ctx):
            pass
    """,
    "nightly_step.py": """
        config = {"name": "Nightly", "type": "cron", "schedule": "0 3 * * *",
                  "timezone": "Europe/Paris", "emits": ["thing.created"]}
        async def handler(_, ctx):
            pass
    """,
    "orphan_step.py": """
        config = {"name": "Orphan", "type": "event", "subscribes": ["nobody.emits.this"]}
        async def handler(event, ctx):
            pass
    """,
}


def test_graph_as_json_text_and_mermaid(tmp_path: Path) -> None:
    steps = write_steps(tmp_path, FLOW)
    env = {"STEPS_DIR": str(steps)}
    as_json = run_cli("graph", "--format", "json", env=env)
    as_text = run_cli("graph", env=env)
    as_mermaid = run_cli("graph", "--format", "mermaid", env=env)
    assert as_json.returncode == as_text.returncode == as_mermaid.returncode == 0, as_json.stderr
    graph = json.loads(as_json.stdout)
    assert {"from": "CreateThing", "to": "IndexThing", "topic": "thing.created"} in graph["edges"]
    assert {"from": "Nightly", "to": "IndexThing", "topic": "thing.created"} in graph["edges"]
    assert {s["name"]: s["type"] for s in graph["steps"]} == {
        "CreateThing": "api",
        "IndexThing": "event",
        "Nightly": "cron",
        "Orphan": "event",
    }
    warnings = "\n".join(graph["warnings"])
    assert "'thing.audited' is emitted by CreateThing but no step subscribes" in warnings
    assert "'nobody.emits.this' is subscribed to by Orphan but no step emits it" in warnings
    assert "warning: topic 'thing.audited'" in as_text.stderr
    assert "[api] CreateThing  POST /things" in as_text.stdout
    assert "'0 3 * * *' Europe/Paris" in as_text.stdout
    assert as_mermaid.stdout.startswith("flowchart LR")
    assert "CreateThing -- thing.created --> IndexThing" in as_mermaid.stdout


def test_migrate_creates_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    result = run_cli("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"stepwise_state", "stepwise_deliveries", "stepwise_events", "alembic_version"} <= tables


def test_new_step_writes_working_steps_and_tests(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(ROOT), "STEPS_DIR": "steps"}
    for name, kind in (("SendInvoice", "api"), ("InvoiceSent", "event"), ("Remind", "cron")):
        made = run_cli(
            "new", "step", name, "--type", kind, "--feature", "billing", cwd=tmp_path, env=env
        )
        assert made.returncode == 0, made.stderr
    again = run_cli("new", "step", "SendInvoice", "--feature", "billing", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "steps/billing/send_invoice_step.py").exists()
    tests = sorted((tmp_path / "tests/steps/billing").glob("test_*_step.py"))
    assert [t.name for t in tests] == [
        "test_invoice_sent_step.py",
        "test_remind_step.py",
        "test_send_invoice_step.py",
    ]
    graph = run_cli("graph", cwd=tmp_path, env=env)
    assert graph.returncode == 0 and "SendInvoice  POST /billing/send-invoice" in graph.stdout
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "--rootdir",
            str(tmp_path),
            *map(str, tests),
        ],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6 passed" in run.stdout
