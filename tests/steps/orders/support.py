"""Helpers of the order tests: the app with its worker, orders placed and awaited over HTTP,
and direct looks at the tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.runtime import Runtime
from app.runtime._db import SQLITE_BEGIN
from steps.orders.models import EmailOutbox, Product
from tests.accounts import admin_settings
from tests.conftest import running_app
from tests.support import eventually

FINAL = {"delivery_scheduled", "payment_failed", "out_of_stock"}
DECLINED_CARD = "4000 0000 0000 0002"


@asynccontextmanager
async def orders_app(db_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The real steps with the worker running in-process, and the settings' admin account."""
    async with running_app(admin_settings(db_url, **overrides)) as client:
        yield client


def engine_of(client: httpx.AsyncClient) -> AsyncEngine:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime.engine


async def place_order(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    items: list[dict[str, Any]],
    **fields: Any,
) -> httpx.Response:
    return await client.post("/orders", json={"items": items, **fields}, headers=headers)


async def await_final(
    client: httpx.AsyncClient, headers: dict[str, str], order_id: str, timeout: float = 20
) -> dict[str, Any]:
    """The order once the flow has left it in a final status."""

    async def final() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/orders/{order_id}", headers=headers)).json()
        return body if body.get("status") in FINAL else None

    found: dict[str, Any] = await eventually(final, timeout=timeout)
    return found


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection that only reads: on SQLite it takes no write lock (BEGIN IMMEDIATE)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            yield await conn.execution_options(**{SQLITE_BEGIN: "none"})
        else:
            yield conn


async def stock_of(engine: AsyncEngine, sku: str) -> int:
    async with reading(engine) as conn:
        return int(await conn.scalar(select(Product.stock).where(Product.sku == sku)) or 0)


async def set_stock(engine: AsyncEngine, sku: str, stock: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(Product).where(Product.sku == sku).values(stock=stock))


async def outbox(engine: AsyncEngine) -> list[Any]:
    async with reading(engine) as conn:
        return list(await conn.execute(select(EmailOutbox).order_by(EmailOutbox.created_at)))
