"""The system feature's logic: readiness checks."""

from __future__ import annotations

import asyncio
import functools

from pydantic import BaseModel
from sqlalchemy import text

from app.db import head_revisions, migrations_pending
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
