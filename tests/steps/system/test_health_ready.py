"""GET /health and GET /ready, as real step files, over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import text

from app.runtime._db import create_engine
from tests.conftest import make_settings, running_app


async def test_health_is_public_and_carries_a_trace_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert len(response.headers["x-trace-id"]) == 32


async def test_ready_when_the_database_is_migrated(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "database": "ok", "migrations": "ok"}


async def test_ready_is_503_while_migrations_are_pending(db_url: str) -> None:
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    await engine.dispose()
    async with running_app(make_settings(db_url)) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["migrations"] == "pending"


async def test_ready_is_503_while_the_database_is_unreachable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "deeper"
    settings = make_settings(f"sqlite:///{missing}/db.sqlite")
    async with running_app(settings, role="api") as client:
        (missing / "db.sqlite").unlink(missing_ok=True)
        missing.rmdir()
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
