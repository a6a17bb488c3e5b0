"""Test fixtures: a real database per test (SQLite file, or Postgres with TEST_DATABASE_URL)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from app.db import migrate
from app.i18n import translate
from app.models import load_feature_models
from app.runtime import Clock
from app.runtime.testing import configure_step_tester
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("STEPWISE_REQUIRE_POSTGRES") == "1"
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgres")

# StepTester speaks the project's catalogues and creates the features' tables.
configure_step_tester(translator=translate, metadata=[load_feature_models(ROOT / "steps")])


def pytest_report_header(config: pytest.Config) -> str:
    return f"stepwise database: {'postgres' if ON_POSTGRES else 'sqlite'}"


# -- Postgres -------------------------------------------------------------------------------------


def _admin_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_reachable(url: str) -> str | None:
    """None when reachable, else the reason."""
    try:
        with psycopg.connect(_admin_url(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return f"no PostgreSQL reachable at {make_url(url).render_as_string()}: {exc}".strip()


class PgDatabase:
    """A database of its own for this test session, migrated once, emptied between tests."""

    def __init__(self, server_url: str) -> None:
        self.name = f"stepwise_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.admin = _admin_url(server_url)
        self.url = (
            make_url(server_url).set(database=self.name).render_as_string(hide_password=False)
        )
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        migrate(self.url)
        self.tables = self._tables()
        with psycopg.connect(_admin_url(self.url)) as conn:
            self.versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]

    def _tables(self) -> list[str]:
        with psycopg.connect(_admin_url(self.url)) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            ).fetchall()
        return [r[0] for r in rows]

    def reset(self) -> None:
        from tests.support import reseed_postgres

        for attempt in range(1, 4):
            try:
                self._empty()
                break
            except psycopg.errors.LockNotAvailable:
                # Something reconnected between the terminate and the TRUNCATE and holds a
                # lock: say who (a leak of an earlier test), terminate again, try again.
                holders = self._lock_holders()
                if attempt == 3:
                    raise AssertionError(f"cannot empty the test database: {holders}") from None
                print(f"reset: TRUNCATE waited on {holders}; retrying")
        reseed_postgres(self.url)

    def _empty(self) -> None:
        with psycopg.connect(_admin_url(self.url), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )
            # Never wait forever on a lock (a hung reset would hold the whole run).
            conn.execute("SET lock_timeout = '15s'")
            if self.tables:
                conn.execute(
                    "TRUNCATE "
                    + ", ".join(f'"{t}"' for t in self.tables)
                    + " RESTART IDENTITY CASCADE"
                )
            # A test may have moved the migration mark (e.g. to see /ready say "pending").
            conn.execute("DELETE FROM alembic_version")
            for version in self.versions:
                conn.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", (version,))

    def _lock_holders(self) -> list[tuple[object, ...]]:
        with psycopg.connect(_admin_url(self.url), autocommit=True) as conn:
            return conn.execute(
                "SELECT pid, application_name, state, left(query, 120) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            ).fetchall()

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _pg_main() -> Iterator[PgDatabase | None]:
    if not ON_POSTGRES:
        yield None
        return
    reason = postgres_reachable(TEST_DATABASE_URL)
    if reason:
        pytest.exit(f"TEST_DATABASE_URL is set but {reason}", returncode=2)
    db = PgDatabase(TEST_DATABASE_URL)
    yield db
    db.drop()


@pytest.fixture(scope="session")
def _pg_extra() -> Iterator[PgDatabase | None]:
    """For Postgres-only tests in a SQLite run: a Postgres database when one is reachable."""
    if ON_POSTGRES:
        yield None
        return
    reason = postgres_reachable(POSTGRES_URL)
    if reason:
        yield None
        return
    db = PgDatabase(POSTGRES_URL)
    yield db
    db.drop()


@pytest.fixture
def pg_url(_pg_main: PgDatabase | None, _pg_extra: PgDatabase | None) -> str:
    """A clean Postgres database URL; skips (or fails in CI) when no Postgres is reachable."""
    db = _pg_main or _pg_extra
    if db is None:
        reason = postgres_reachable(POSTGRES_URL) or "Postgres unavailable"
        if REQUIRE_POSTGRES:
            pytest.fail(f"STEPWISE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(f"Postgres test skipped: {reason}")
    db.reset()
    return db.url


# -- SQLite ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


def sqlite_copy(template: Path, folder: Path) -> str:
    target = folder / f"db-{uuid.uuid4().hex[:6]}.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _sqlite_template: Path,
    _pg_main: PgDatabase | None,
) -> str:
    """A migrated, empty database for this test, on the backend of this run."""
    if _pg_main is not None:
        _pg_main.reset()
        return _pg_main.url
    return sqlite_copy(_sqlite_template, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path, _sqlite_template: Path) -> str:
    """Both backends in every run (the Postgres one skips when none is reachable)."""
    if request.param == "sqlite":
        return sqlite_copy(_sqlite_template, tmp_path)
    return str(request.getfixturevalue("pg_url"))


# -- the app --------------------------------------------------------------------------------------


def make_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": db_url,
        "steps_dir": ROOT / "steps",
        "log_level": "WARNING",
        "sqlite_synchronous": "NORMAL",
        # Real argon2id at its cheapest (production costs ~0.1 s a hash); tests that measure
        # the cost itself set production values.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 8192,
        "password_hash_parallelism": 1,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


AppFactory = Callable[..., Any]


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    role: str = "dev",
    clock: Clock | None = None,
    middleware: Sequence[type] = (),
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client on it (no network); `middleware`
    is added outermost (e.g. tests/runtime/conftest.py's HeaderUser)."""
    from app.main import create_app

    app = create_app(settings, role=role, clock=clock)  # type: ignore[arg-type]
    for cls in middleware:
        app.add_middleware(cls)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as c:
        yield c
