"""The tutorial cannot rot: its shell blocks run, in order, against a live server.

docs/tutorial.md is read as a script. Every ```bash block runs (one bash session, so variables
such as TOKEN carry over) in a scratch copy of the project, against `python -m app dev` started
the way `make run` starts it. HTML comments steer the run without showing to readers:

    <!-- tutorial: skip -->        the next block is not run (make run, git clone, docker)
    <!-- tutorial: postgres -->    the next block runs only when a Postgres is reachable
    <!-- expect: TEXT -->          the output of the block above contains TEXT
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import (
    ON_POSTGRES,
    POSTGRES_URL,
    REQUIRE_POSTGRES,
    TEST_DATABASE_URL,
    _admin_url,
    postgres_reachable,
)
from tests.support import ROOT

pytestmark = pytest.mark.slow

TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*(tutorial|expect):\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    line: int
    code: str
    skip: bool = False
    postgres: bool = False
    expect: list[str] = field(default_factory=list)


def read_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    pending: set[str] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        directive = DIRECTIVE.match(lines[i])
        if directive and directive.group(1) == "tutorial":
            pending.add(directive.group(2))
        elif directive and directive.group(1) == "expect" and blocks:
            blocks[-1].expect.append(directive.group(2))
        fence = FENCE.match(lines[i])
        if fence and fence.group(1) in ("bash", "sh", "shell"):
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            blocks.append(
                Block(start, "\n".join(lines[start:i]), "skip" in pending, "postgres" in pending)
            )
            pending = set()
        elif fence:  # another language: skip to its end
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
        i += 1
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scratch_copy(target: Path) -> Path:
    """The project as a newcomer has it after `make run`: sources plus the virtualenv."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    for mo in ROOT.glob("locales/*/LC_MESSAGES/*.mo"):
        shutil.copy2(mo, target / mo.relative_to(ROOT))
    (target / ".venv").symlink_to(ROOT / ".venv")
    if (ROOT / "node_modules").exists():
        (target / "node_modules").symlink_to(ROOT / "node_modules")
    (target / "var").mkdir(exist_ok=True)
    return target


def new_database(server: str) -> str:
    name = f"stepwise_tutorial_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_url(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _admin_url(server).rsplit("/", 1)[0] + "/" + name


def database_for_run() -> tuple[str | None, str | None]:
    """(DATABASE_URL for the server — None: the SQLite default of `make run` — and a database
    of its own for the blocks marked postgres, or None when no Postgres is reachable)."""
    server = TEST_DATABASE_URL if ON_POSTGRES else POSTGRES_URL
    reason = postgres_reachable(server)
    if reason is not None:
        if REQUIRE_POSTGRES or ON_POSTGRES:
            pytest.fail(f"a Postgres run, or STEPWISE_REQUIRE_POSTGRES=1, but {reason}")
        return None, None
    return (new_database(server) if ON_POSTGRES else None), new_database(server)


def drop(url: str | None) -> None:
    if url:
        name = url.rsplit("/", 1)[1]
        admin = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_tutorial_runs_end_to_end(tmp_path: Path) -> None:
    blocks = read_blocks(TUTORIAL.read_text())
    assert len([b for b in blocks if not b.skip]) >= 5, "the tutorial lost its commands"
    project = scratch_copy(tmp_path / "my-backend")
    port, port2 = free_port(), free_port()
    server_db, postgres_url = database_for_run()
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "VIRTUAL_ENV"))
        },
        "PATH": f"{project / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "TUTORIAL_POSTGRES_URL": postgres_url or "",
    }
    if server_db:
        env["DATABASE_URL"] = server_db
    server = subprocess.Popen(
        [str(project / ".venv/bin/python"), "-m", "app", "dev"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "the server never answered /health"
            time.sleep(0.2)
        script = ["set -euo pipefail"]
        run_blocks = []
        for n, block in enumerate(blocks):
            if block.skip or (block.postgres and not postgres_url):
                continue
            code = block.code.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
            code = code.replace("localhost:3000", f"localhost:{port}")
            code = code.replace("127.0.0.1:3001", f"127.0.0.1:{port2}").replace(
                "--port 3001", f"--port {port2}"
            )
            if block.postgres:
                code = re.sub(r"postgresql://[^\s'\"]+", postgres_url or "", code)
            script += [f"echo '@@block {n}'", code]
            run_blocks.append(n)
        script.append("echo '@@done'")
        # A session of its own: when a block fails half-way, what it started in the background
        # (the Postgres section's API and workers) is killed with it, not left running.
        shell = subprocess.Popen(
            ["bash", "-c", "\n".join(script)],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = shell.communicate(timeout=900)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
        result = subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)
        output = result.stdout
        parts = dict(re.findall(r"@@block (\d+)\n(.*?)(?=@@block \d+\n|@@done|\Z)", output, re.S))
        last = max((int(k) for k in parts), default=-1)
        where = f"docs/tutorial.md line {blocks[last].line}" if last >= 0 else "the first block"
        assert result.returncode == 0 and "@@done" in output, (
            f"the tutorial stopped in the block at {where}:\n{parts.get(str(last), '')[-3000:]}\n"
            f"stderr:\n{result.stderr[-3000:]}"
        )
        for n in run_blocks:
            for expected in blocks[n].expect:
                assert expected in parts.get(str(n), ""), (
                    f"docs/tutorial.md line {blocks[n].line}: output lacks {expected!r}:\n"
                    f"{parts.get(str(n), '')[-2000:]}"
                )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        drop(postgres_url)
        drop(server_db)
