"""The database goes away under load (its connections cut, or Postgres restarted): /ready says so
while it lasts, requests get a clean 503 envelope with Retry-After (never a 500), and everything
comes back by itself with nothing accepted lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import FaultRecord
from tests.reliability.harness import System, is_envelope
from tests.reliability.verify import settle
from tests.support import eventually

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class ReadyProbe:
    """GET /ready every 20 ms in the background, like a load balancer: what it answered."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seen: list[tuple[int, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReadyProbe:
        self._task = asyncio.create_task(self._probe())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _probe(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            while True:
                try:
                    reply = await http.get("/ready")
                    self.seen.append((reply.status_code, reply.json()))
                except httpx.HTTPError as exc:
                    self.seen.append((0, type(exc).__name__))
                await asyncio.sleep(0.02)

    @property
    def outage_reported(self) -> bool:
        return any(
            status == 503
            and body == {"ready": False, "database": "unreachable", "migrations": "unknown"}
            for status, body in self.seen
        )


async def refused_while_down(system: System, locale: str) -> httpx.Response:
    """A request made while the database is away: its answer."""
    token = system.accounts[0].token
    async with httpx.AsyncClient(base_url=system.cluster.base_url, timeout=10) as http:
        return await http.post(
            "/orders",
            json={"items": [{"sku": "BOOK-1", "quantity": 1}]},
            headers={"Authorization": f"Bearer {token}", "Accept-Language": locale},
        )


def assert_database_unavailable(reply: httpx.Response) -> str:
    assert reply.status_code == 503, reply.text
    assert is_envelope(reply), reply.text
    assert reply.json()["code"] == "database_unavailable"
    assert int(reply.headers["retry-after"]) > 0
    return str(reply.json()["error"])


async def test_a_database_cut_away_mid_load_is_reported_refused_cleanly_and_recovered_from(
    pg_system: System, faults: FaultRecord
) -> None:
    system = pg_system
    assert system.proxy is not None
    processes = [p.pid for p in system.cluster.processes if p.alive()]
    async with ReadyProbe(system.cluster.base_url) as probe, system.load() as load:
        await load.until(accepted=15)
        system.proxy.cut()
        try:
            await eventually(lambda: _true(probe.outage_reported), timeout=15)
            texts = {
                locale: assert_database_unavailable(await refused_while_down(system, locale))
                for locale in ("en", "vi", "ja")
            }
            await load.run_for(1.5)  # the clients keep going through the outage
        finally:
            system.proxy.restore()
        await system.cluster.wait_ready(timeout=60)  # back by itself: nobody restarted anything
        await load.until(accepted=15)
    assert len(set(texts.values())) == 3, texts  # translated
    assert sum(n for (_, status, _), n in load.tally.refused.items() if status == 503) > 0
    assert [p.pid for p in system.cluster.processes if p.alive()] == processes
    outcome, _ = await settle(system)
    faults.add("Postgres connections cut", system.tally, outcome)


@pytest.mark.skipif(
    os.environ.get("STEPWISE_ALLOW_PG_RESTART") != "1",
    reason="restarts the machine's Postgres; CI sets STEPWISE_ALLOW_PG_RESTART=1",
)
async def test_a_postgres_restart_mid_load_is_reported_and_recovered_from(
    pg_system: System, faults: FaultRecord
) -> None:
    system = pg_system
    cluster_name = os.listdir("/etc/postgresql")[0]
    processes = [p.pid for p in system.cluster.processes if p.alive()]
    async with ReadyProbe(system.cluster.base_url) as probe, system.load() as load:
        await load.until(accepted=15)
        await asyncio.to_thread(
            subprocess.run,
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_name, "main", "restart"],
            check=True,
            timeout=120,
        )
        await system.cluster.wait_ready(timeout=60)
        await load.until(accepted=15)
    assert probe.outage_reported, probe.seen[-20:]
    assert [p.pid for p in system.cluster.processes if p.alive()] == processes
    outcome, _ = await settle(system)
    faults.add("Postgres restart", system.tally, outcome)


async def _true(value: bool) -> bool:
    return value
