"""Fault tests: running systems shared by the tests of a session (starting the processes is the
slow part), and the figures of the run printed at its end (faults survived, requests accepted,
events lost)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    ON_POSTGRES,
    POSTGRES_URL,
    REQUIRE_POSTGRES,
    TEST_DATABASE_URL,
    PgDatabase,
    postgres_reachable,
    sqlite_copy,
)
from tests.reliability.figures import FIGURES
from tests.reliability.harness import Cluster, System, Tally, TcpProxy, accounts_for
from tests.reliability.verify import Outcome, restock


@dataclass
class FaultRecord:
    """Filled by the fault tests as they pass; printed by pytest_terminal_summary."""

    survived: list[str] = field(default_factory=list)
    # The latest outcome of each tally (a system's tally grows from test to test).
    tallies: dict[int, tuple[Tally, Outcome | None]] = field(default_factory=dict)

    def add(self, fault: str, tally: Tally | None = None, outcome: Outcome | None = None) -> None:
        self.survived.append(fault)
        if tally is not None:
            self.tallies[id(tally)] = (tally, outcome)

    def line(self) -> str:
        tallies = [t for t, _ in self.tallies.values()]
        requests = sum(t.requests for t in tallies)
        accepted = sum(t.accepted for t in tallies)
        refused = sum(sum(t.refused.values()) for t in tallies)
        unanswered = sum(t.unanswered for t in tallies)
        events = sum(o.events for _, o in self.tallies.values() if o is not None)
        return (
            f"reliability: {len(self.survived)} faults survived, {requests} requests sent, "
            f"{accepted} accepted, {refused} refused cleanly (503/507), {unanswered} unanswered "
            f"(process killed), {events} events checked, events lost = 0"
        )


RECORD = FaultRecord()


@pytest.fixture
def faults() -> FaultRecord:
    return RECORD


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:  # what the attack, input and fuzz tests tried
        terminalreporter.section("reliability figures")
        for name, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")
    if RECORD.survived:
        terminalreporter.write_sep("=", "reliability")
        terminalreporter.write_line(RECORD.line())
        terminalreporter.write_line("faults: " + "; ".join(RECORD.survived))


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """`clusters(db_url, **env)`: a Cluster whose processes are all stopped when the test ends."""
    made: list[Cluster] = []

    def make(db_url: str, **env: str) -> Cluster:
        folder = tmp_path / f"cluster-{len(made)}"
        folder.mkdir()
        cluster = Cluster(db_url, folder, **env)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


# -- systems shared by the session ----------------------------------------------------------------


class Systems:
    """One running System per backend, started on first use, stopped at the end of the session.
    The Postgres one reaches its database through a TcpProxy, so a test can cut it away."""

    def __init__(self, folder: Path, sqlite_template: Path) -> None:
        self.folder = folder
        self.sqlite_template = sqlite_template
        self.started: dict[str, System] = {}
        self.pg_databases: list[PgDatabase] = []

    async def get(self, backend: str) -> System:
        if backend not in self.started:
            self.started[backend] = await self._start(backend)
        return self.started[backend]

    async def _start(self, backend: str) -> System:
        folder = self.folder / backend
        folder.mkdir()
        proxy = None
        if backend == "sqlite":
            db_url = app_url = sqlite_copy(self.sqlite_template, folder)
        else:
            server = TEST_DATABASE_URL if ON_POSTGRES else POSTGRES_URL
            reason = postgres_reachable(server)
            if reason:
                if REQUIRE_POSTGRES:
                    pytest.fail(f"STEPWISE_REQUIRE_POSTGRES=1 but {reason}")
                pytest.skip(f"Postgres test skipped: {reason}")
            database = PgDatabase(server)
            self.pg_databases.append(database)
            db_url = database.url
            parsed = make_url(db_url)
            proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432).start()
            app_url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
                hide_password=False
            )
        cluster = Cluster(app_url, folder)
        cluster.api()
        cluster.worker()
        cluster.worker()

        try:
            await cluster.wait_ready(timeout=120)
            accounts = await accounts_for(cluster.base_url, 3, f"load-{backend}")
            before = await asyncio.to_thread(restock, db_url)
            return System(backend, db_url, cluster, accounts, before, proxy=proxy)
        except BaseException:
            cluster.stop()
            raise

    def close(self) -> None:
        for system in self.started.values():
            system.cluster.stop()
            if system.proxy is not None:
                system.proxy.close()
        for database in self.pg_databases:
            database.drop()


@pytest.fixture(scope="session")
def systems(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Iterator[Systems]:
    running = Systems(tmp_path_factory.mktemp("systems"), _sqlite_template)
    yield running
    running.close()


@pytest.fixture
async def system(systems: Systems) -> System:
    """The system on the backend of this run (SQLite, or Postgres with TEST_DATABASE_URL)."""
    running = await systems.get("postgres" if ON_POSTGRES else "sqlite")
    await running.heal()
    return running


@pytest.fixture
async def pg_system(systems: Systems) -> System:
    """The system on Postgres (skipped when none is reachable, failed in CI)."""
    running = await systems.get("postgres")
    await running.heal()
    return running
