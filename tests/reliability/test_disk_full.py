"""The disk of the SQLite database fills up under load: requests get a clean 507 envelope (never a
500), nothing is half-written, /ready says so while it lasts, and all comes back once there is
space again."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import sqlite_copy
from tests.reliability.conftest import FaultRecord
from tests.reliability.harness import Cluster, System, accounts_for
from tests.reliability.verify import settle, stock
from tests.support import eventually

pytestmark = pytest.mark.slow

MESSAGES = os.environ.get("RELIABILITY_NO_MESSAGES") != "1"


@contextmanager
def small_filesystem(folder: Path, size: str = "32m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (needs root, or CAP_SYS_ADMIN)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}): see test_disk_full_simulated"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system has not one byte left; the file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\xff" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


async def ready_answer(base_url: str) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        reply = await http.get("/ready")
        return reply.status_code, reply.json()


async def test_a_full_disk_under_load_is_refused_cleanly_and_recovered_from(
    tmp_path: Path,
    _sqlite_template: Path,
    clusters: Callable[..., Cluster],
    faults: FaultRecord,
) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        db_url = sqlite_copy(_sqlite_template, disk)
        cluster = clusters(db_url)
        cluster.dev()
        await cluster.wait_ready(timeout=90)
        accounts = await accounts_for(cluster.base_url, 2, "disk-full")
        system = System("disk", db_url, cluster, accounts, await asyncio.to_thread(stock, db_url))
        async with system.load(messages=MESSAGES) as load:
            await load.until(accepted=15)
            filler = await asyncio.to_thread(fill, disk)
            try:
                await eventually(lambda: _refused(load, 507), timeout=60)
                status, body = await ready_answer(cluster.base_url)
                assert (status, body["database"]) == (503, "full"), body
                await load.run_for(1.0)
            finally:
                filler.unlink()
            await cluster.wait_ready(timeout=60)
            await load.until(accepted=15)
        outcome, _ = await settle(system)
    assert all(p.alive() for p in cluster.processes)
    faults.add("disk full (tmpfs)", system.tally, outcome)


async def _refused(load, status: int) -> bool:  # type: ignore[no-untyped-def]
    return any(s == status for (_, s, _) in load.tally.refused)
