"""The stock reservation under a real race on Postgres: two transactions for the last mug, the
second one provably waiting on the first's row lock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import create_engine
from steps.orders import service
from steps.orders.schemas import CreateOrder
from tests.conftest import make_settings
from tests.steps.orders.support import set_stock, stock_of
from tests.support import eventually

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


async def paid_mug_order(sessions: async_sessionmaker[AsyncSession], user: str) -> uuid.UUID:
    async with sessions() as session, session.begin():
        data = CreateOrder.model_validate({"items": [{"sku": "MUG-1", "quantity": 1}]})
        user_ = {"id": user, "role": "user", "email": f"{user}@example.com"}
        order = await service.create_order(session, user_, data, trace_id="t", now=NOW)
        paid = await service.transition(
            session, order.id, {"pending"}, "paid", trace_id="t", now=NOW
        )
        assert paid is not None
        return order.id


async def lock_waiters(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(found or 0)


async def test_two_transactions_reserving_the_last_mug_on_postgres(pg_url: str) -> None:
    engine = create_engine(make_settings(pg_url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        await set_stock(engine, "MUG-1", 1)
        first_id = await paid_mug_order(sessions, "ada")
        second_id = await paid_mug_order(sessions, "bob")

        async with sessions() as first, sessions() as second:
            reserved = await service.reserve_inventory(first, first_id, trace_id="a", now=NOW)
            # The first transaction holds the mug's row; the second must wait for it.
            racing = asyncio.create_task(
                service.reserve_inventory(second, second_id, trace_id="b", now=NOW)
            )
            await eventually(lambda: lock_waiters(engine))
            assert not racing.done()
            await first.commit()
            lost = await racing
            await second.commit()
        stock = await stock_of(engine, "MUG-1")
    finally:
        await engine.dispose()

    assert reserved is not None and reserved.status == "inventory_reserved"
    assert lost is not None and lost.status == "out_of_stock"
    assert stock == 0


async def test_a_reservation_delivered_twice_at_once_reserves_once_on_postgres(
    pg_url: str,
) -> None:
    engine = create_engine(make_settings(pg_url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        order_id = await paid_mug_order(sessions, "ada")
        before = await stock_of(engine, "MUG-1")
        async with sessions() as first, sessions() as second:
            done = await service.reserve_inventory(first, order_id, trace_id="a", now=NOW)
            # The same event handled by a second worker: it waits on the order's row lock.
            again = asyncio.create_task(
                service.reserve_inventory(second, order_id, trace_id="a", now=NOW)
            )
            await eventually(lambda: lock_waiters(engine))
            await first.commit()
            repeated = await again
            await second.commit()
        after = await stock_of(engine, "MUG-1")
    finally:
        await engine.dispose()
    assert done is not None and done.status == "inventory_reserved"
    assert repeated is None
    assert after == before - 1


async def test_placing_an_order_never_waits_for_a_reservation_on_postgres(pg_url: str) -> None:
    """The reservation's row locks leave the foreign-key checks of new orders alone: with
    `FOR UPDATE` instead, orders and reservations would wait on each other (and deadlock)."""
    engine = create_engine(make_settings(pg_url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        order_id = await paid_mug_order(sessions, "ada")
        async with sessions() as reserving, sessions() as placing:
            reserved = await service.reserve_inventory(reserving, order_id, trace_id="a", now=NOW)
            data = CreateOrder.model_validate({"items": [{"sku": "MUG-1", "quantity": 1}]})
            bob = {"id": "bob", "role": "user", "email": "bob@example.com"}
            placed = await asyncio.wait_for(
                service.create_order(placing, bob, data, trace_id="b", now=NOW), timeout=10
            )
            await placing.commit()
            await reserving.commit()
    finally:
        await engine.dispose()
    assert reserved is not None and reserved.status == "inventory_reserved"
    assert placed.status == "pending"
