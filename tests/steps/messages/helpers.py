"""Shared by the messages tests: the sample app, step testers on one database, state reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from app.runtime import Clock, Runtime
from app.runtime._db import create_engine
from app.runtime._schema import deliveries
from app.runtime._unit import Unit
from app.runtime.testing import StepTester
from tests.conftest import ROOT, make_settings, running_app
from tests.runtime.conftest import HeaderUser

USER = {"X-Test-User": "user-7:user"}
POSITIVE = "I love this, it is wonderful!"
NEGATIVE = "This is terrible, I hate it"


@asynccontextmanager
async def sample_app(
    db_url: str, *, clock: Clock | None = None, test_users: bool = True, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The real steps with the worker and scheduler in-process; with `test_users`, the header
    `X-Test-User: id:role` signs a user in (else only real tokens do)."""
    settings = make_settings(db_url, **overrides)
    middleware = [HeaderUser] if test_users else []
    async with running_app(settings, clock=clock, middleware=middleware) as client:
        yield client


async def state(runtime: Runtime, group: str, key: str | None = None) -> Any:
    unit = Unit(runtime.engine, runtime.clock.now)
    return await (unit.get_group(group) if key is None else unit.get(group, key))


async def settled(runtime: Runtime, step: str, done: int) -> bool:
    """`step` has finished `done` deliveries and has none waiting or running."""
    async with runtime.read_connection() as conn:
        rows = await conn.execute(
            select(deliveries.c.status, func.count())
            .where(deliveries.c.step == step)
            .group_by(deliveries.c.status)
        )
        counts = {status: n for status, n in rows}
    return counts.get("done", 0) == done and set(counts) <= {"done"}


@asynccontextmanager
async def step_testers(
    db_url: str, *names: str, clock: Clock | None = None
) -> AsyncIterator[list[StepTester]]:
    """StepTesters of several steps sharing one migrated database (SQLite or Postgres), so that
    what one step stores the next one sees."""
    engine = create_engine(db_url, sqlite_synchronous="NORMAL")
    try:
        async with AsyncExitStack() as stack:
            testers = [
                await stack.enter_async_context(
                    StepTester(name, steps_dir=ROOT / "steps", engine=engine, clock=clock)
                )
                for name in names
            ]
            yield testers
    finally:
        await engine.dispose()
