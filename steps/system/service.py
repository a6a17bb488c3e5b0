"""The system feature's logic: readiness checks and the public configuration."""

from __future__ import annotations

import asyncio
import functools

from pydantic import BaseModel
from sqlalchemy import text

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


async def readiness(ctx: Context, limit_seconds: float = 2.0) -> ReadinessReport:
    try:
        async with asyncio.timeout(limit_seconds), ctx.reader() as session:
            await session.execute(text("SELECT 1"))
            pending = await migrations_pending(await session.connection(), set(_heads()))
    except Exception as exc:
        ctx.logger.warning("not ready: database unreachable", error=str(exc))
        return ReadinessReport(ready=False, database="unreachable", migrations="unknown")
    if pending:
        return ReadinessReport(ready=False, database="ok", migrations="pending")
    return ReadinessReport(ready=True, database="ok", migrations="ok")


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
