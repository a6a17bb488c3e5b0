"""The disk of the SQLite database fills up under load: requests get a clean 507 envelope (never a
500), nothing is half-written, /ready says so while it lasts, and all comes back once there is
space again."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event

from app.i18n import translate
from tests.accounts import assert_envelope, sign_up
from tests.conftest import make_settings, running_app, sqlite_copy
from tests.reliability.conftest import FaultRecord
from tests.reliability.harness import Cluster, System, Tally, accounts_for
from tests.reliability.verify import check, restock, settle, wait_drained
from tests.support import eventually

pytestmark = pytest.mark.slow


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
        system = System("disk", db_url, cluster, accounts, await asyncio.to_thread(restock, db_url))
        async with system.load() as load:
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


class FullDisk:
    """While `full`, every write statement of the engine fails as it would on a full disk
    (SQLite: "database or disk is full"; Postgres: DiskFull, SQLSTATE 53100)."""

    def __init__(self, engine: Any) -> None:
        self.full = False
        self.refused = 0
        self.sqlite = engine.dialect.name == "sqlite"
        event.listen(engine.sync_engine, "before_cursor_execute", self._check)

    def _check(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.full and statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self.refused += 1
            if self.sqlite:
                raise sqlite3.OperationalError("database or disk is full")
            raise psycopg.errors.DiskFull("could not extend file: No space left on device")


async def test_a_full_disk_simulated_at_the_engine_is_refused_cleanly_and_recovered_from(
    db_url: str, faults: FaultRecord
) -> None:
    """Where no file system can be mounted: the same fault, at the session layer, in process."""
    initial = await asyncio.to_thread(restock, db_url)
    tally = Tally()
    async with running_app(make_settings(db_url)) as client:
        user, headers = await sign_up(client, "full-disk@example.com")
        disk = FullDisk(client.app.state.runtime.engine)  # type: ignore[attr-defined]
        before = await place(client, headers, tally, user["id"], "before [load full-1]")
        disk.full = True
        order = await client.post("/orders", json={"items": BOOK}, headers=headers)
        message = await client.post(
            "/messages",
            json={"text": "lost? [load full-2]"},
            headers={**headers, "Accept-Language": "ja"},
        )
        read = await client.get(f"/orders/{before}", headers=headers)
        disk.full = False
        after = await place(client, headers, tally, user["id"], "after [load full-3]")
        await eventually(lambda: _final(client, headers, [before, after]), timeout=30)
        await wait_drained(db_url, timeout=30)
    tally.requests += 3
    tally.refused[("POST /orders", order.status_code, order.json()["code"])] += 1
    tally.refused[("POST /messages", message.status_code, message.json()["code"])] += 1
    assert_envelope(order, 507, "insufficient_storage")
    assert int(order.headers["retry-after"]) > 0
    assert assert_envelope(message, 507, "insufficient_storage")["error"] == translate(
        "error.insufficient_storage", "ja"
    )
    assert read.status_code == 200  # reads still work
    assert disk.refused >= 2
    outcome = await asyncio.to_thread(check, db_url, tally, initial)
    assert not outcome.problems, outcome.problems
    assert outcome.orders == 2 and outcome.messages == 2  # the refused ones left nothing behind
    faults.add("disk full (simulated)", tally, outcome)


BOOK = [{"sku": "BOOK-1", "quantity": 1}]


async def place(
    client: httpx.AsyncClient, headers: dict[str, str], tally: Tally, user_id: str, text: str
) -> str:
    """An order and a message, both accepted; the order's id."""
    order = await client.post("/orders", json={"items": BOOK}, headers=headers)
    assert order.status_code == 201, order.text
    message = await client.post("/messages", json={"text": text}, headers=headers)
    assert message.status_code == 202, message.text
    tally.requests += 2
    tally.accepted_orders[str(order.json()["id"])] = str(user_id)
    tally.accepted_messages[str(message.json()["id"])] = text
    return str(order.json()["id"])


async def _final(client: httpx.AsyncClient, headers: dict[str, str], ids: list[str]) -> bool:
    for order_id in ids:
        status = (await client.get(f"/orders/{order_id}", headers=headers)).json()["status"]
        if status != "delivery_scheduled":
            return False
    return True
