"""SIGKILL the app's processes while clients keep posting messages and orders: nothing accepted is
lost, nothing is done twice, nothing is left half-done, and a restarted process (as a supervisor
would restart it) picks up where the dead one stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.reliability.conftest import FaultRecord
from tests.reliability.harness import Cluster, System, accounts_for
from tests.reliability.verify import _rows, restock, settle
from tests.support import eventually

pytestmark = pytest.mark.slow


async def running_deliveries(db_url: str, pid: int) -> int:
    """Deliveries whose lease the process with this pid holds right now."""
    rows = await asyncio.to_thread(
        _rows,
        db_url,
        "SELECT count(*) FROM stepwise_deliveries WHERE status = 'running' "
        "AND lease_owner LIKE :owner",
        owner=f"%:{pid}:%",
    )
    return int(rows[0][0])


async def until_running_handlers(db_url: str, pid: int, timeout: float = 5) -> int:
    """Wait (a while) until the process runs handlers, so that a kill lands mid-handler."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (held := await running_deliveries(db_url, pid)) == 0 and loop.time() < deadline:
        await asyncio.sleep(0.005)
    return held


async def test_a_worker_killed_mid_load_loses_nothing_and_repeats_nothing(
    system: System, faults: FaultRecord
) -> None:
    victim = system.workers[-1]
    async with system.load() as load:
        await load.until(accepted=20)
        held = await until_running_handlers(system.db_url, victim.pid)
        victim.kill()
        system.cluster.worker()  # restarted, as a supervisor would
        # The restarted worker takes back at once what the dead one held (no lease wait).
        await eventually(lambda: _none_held(system.db_url, victim.pid), timeout=90, interval=0.2)
        await load.until(accepted=20)
    outcome, _ = await settle(system)
    print(f"the worker was killed holding {held} deliveries")
    faults.add(f"worker SIGKILL ({system.name})", system.tally, outcome)


async def test_the_api_killed_mid_load_leaves_no_request_half_done(
    system: System, faults: FaultRecord
) -> None:
    async with system.load() as load:
        await load.until(accepted=20)
        await load.requests_in_flight()
        system.api.kill()
        system.cluster.api()
        await system.cluster.wait_ready(timeout=90)
        await load.until(accepted=20)
    outcome, _ = await settle(system)
    faults.add(f"API SIGKILL ({system.name})", system.tally, outcome)


async def test_the_embedded_dev_process_killed_mid_load_comes_back_whole(
    db_url: str, clusters: Callable[..., Cluster], faults: FaultRecord
) -> None:
    """`python -m app dev`: API, worker and cron in one process, killed at once."""
    cluster = clusters(db_url)
    victim = cluster.dev()
    await cluster.wait_ready(timeout=90)
    accounts = await accounts_for(cluster.base_url, 2, "dev-kill")
    system = System("dev", db_url, cluster, accounts, await asyncio.to_thread(restock, db_url))
    async with system.load() as load:
        await load.until(accepted=20)
        await until_running_handlers(db_url, victim.pid)
        victim.kill()
        cluster.dev()
        await cluster.wait_ready(timeout=90)
        await load.until(accepted=20)
    outcome, _ = await settle(system)
    faults.add(
        f"dev SIGKILL ({'postgres' if 'postgres' in db_url else 'sqlite'})", system.tally, outcome
    )


async def _none_held(db_url: str, pid: int) -> bool:
    return await running_deliveries(db_url, pid) == 0
