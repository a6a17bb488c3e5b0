"""Helpers shared by tests: step folders written on the fly, subprocess runners, polling."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from app.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent


def runtime_of(client: httpx.AsyncClient) -> Runtime:
    """The runtime of an app served by `running_app` (or any client with `client.app`)."""
    return client.app.state.runtime  # type: ignore[attr-defined, no-any-return]


def write_steps(base: Path, files: dict[str, str]) -> Path:
    """Write a steps package (a unique name, so tests never share modules) and return it."""
    folder = base / f"steps_{uuid.uuid4().hex[:10]}"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        init = path.parent / "__init__.py"
        if not init.exists():
            init.write_text("")
        path.write_text(textwrap.dedent(source))
    return folder


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll `check` until it returns something truthy (never a fixed sleep for a guess)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def reseed_postgres(url: str) -> None:
    """Re-apply the data that migrations seed (tables are truncated between tests)."""
    from app.seed import seed_sync

    seed_sync(url)
