"""The system feature's logic: readiness checks and the public configuration."""

from __future__ import annotations

import asyncio
import functools
import shutil
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import URL

from app.db import head_revisions, migrations_pending
from app.i18n import DEFAULT_LOCALE, supported_locales
from app.runtime import Context
from app.settings import get_settings


class ReadinessReport(BaseModel):
    ready: bool
    database: str
    migrations: str


@functools.cache
def _heads() -> frozenset[str]:
    return frozenset(head_revisions(get_settings().database_url))


# A SQLite database whose file system has less than this left cannot take writes for long:
# not ready (a load balancer sends the traffic elsewhere), `database: "full"`.
MIN_FREE_BYTES = 1 << 20


def storage_full(url: URL) -> bool:
    """True when the SQLite database's folder has (almost) no space left; a Postgres server's
    disk is its own business (a write there fails with a 507 envelope)."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return False
    try:
        return shutil.disk_usage(Path(url.database).resolve().parent).free < MIN_FREE_BYTES
    except OSError:
        return False


async def readiness(ctx: Context, limit_seconds: float = 2.0) -> ReadinessReport:
    try:
        async with asyncio.timeout(limit_seconds), ctx.reader() as session:
            await session.execute(text("SELECT 1"))
            connection = await session.connection()
            pending = await migrations_pending(connection, set(_heads()))
            full = storage_full(connection.engine.url)
    except Exception as exc:
        ctx.logger.warning("not ready: database unreachable", error=str(exc))
        return ReadinessReport(ready=False, database="unreachable", migrations="unknown")
    migrations = "pending" if pending else "ok"
    if full:
        ctx.logger.warning("not ready: no space left for the database")
        return ReadinessReport(ready=False, database="full", migrations=migrations)
    return ReadinessReport(ready=not pending, database="ok", migrations=migrations)


class AuthConfig(BaseModel):
    algorithm: str
    access_token_expires_in: int


class PublicConfig(BaseModel):
    """What GET /config shows. Listed field by field: nothing is copied from the settings
    wholesale, so a secret added to the settings later cannot appear here by accident."""

    environment: str
    version: str
    app_name: str
    default_locale: str
    locales: list[str]
    auth: AuthConfig
    cors_origins: list[str]
    max_body_bytes: int
    rate_limiting: bool


def public_config() -> PublicConfig:
    settings = get_settings()
    return PublicConfig(
        environment=settings.env,
        version=settings.app_version,
        app_name=settings.app_name,
        default_locale=DEFAULT_LOCALE,
        locales=list(supported_locales()),
        auth=AuthConfig(
            algorithm=settings.jwt_algorithm,
            access_token_expires_in=settings.jwt_expire_minutes * 60,
        ),
        cors_origins=settings.cors_origins,
        max_body_bytes=settings.max_body_bytes,
        rate_limiting=settings.rate_limit_enabled,
    )
