"""The order workflow end to end: HTTP in, the worker running every step, the tables after."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from tests.accounts import sign_up
from tests.steps.orders.support import (
    DECLINED_CARD,
    await_final,
    engine_of,
    orders_app,
    outbox,
    place_order,
    set_stock,
    stock_of,
)
from tests.support import eventually

HAPPY_PATH = ["pending", "paid", "inventory_reserved", "confirmed", "delivery_scheduled"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_an_order_walks_from_pending_to_delivery_scheduled(any_db_url: str) -> None:
    async with orders_app(any_db_url) as client:
        engine = engine_of(client)
        books_before = await stock_of(engine, "BOOK-1")
        mugs_before = await stock_of(engine, "MUG-1")
        _, headers = await sign_up(client, "ada@example.com")
        created = await place_order(
            client,
            {**headers, "X-Trace-Id": "trace-order-1"},
            [{"sku": "BOOK-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}],
            card_number="4242 4242 4242 4242",
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        order = await await_final(client, headers, order_id)
        emails = await outbox(engine)
        books_after = await stock_of(engine, "BOOK-1")
        mugs_after = await stock_of(engine, "MUG-1")

    first = created.json()
    assert first["status"] == "pending"
    assert first["total_cents"] == 2 * 2500 + 1200
    assert first["card_last4"] == "4242"
    assert "4242424242424242" not in created.text
    assert [h["status"] for h in first["history"]] == ["pending"]

    assert order["status"] == "delivery_scheduled"
    assert [h["status"] for h in order["history"]] == HAPPY_PATH
    assert {h["trace_id"] for h in order["history"]} == {"trace-order-1"}
    details = [h["detail"] for h in order["history"]]
    assert details[0] is None and details[1].startswith("charged on attempt 1 (reference sim_")
    assert details[2:4] == [
        "reserved 2 x BOOK-1, 1 x MUG-1",
        "email written to the outbox for ada@example.com",
    ]
    assert details[4] == f"delivery on {order['delivery_date'][:10]}"
    assert order["payment_attempts"] == 1
    assert order["items"] == [
        {"sku": "BOOK-1", "name": "The Stepwise Book", "quantity": 2, "unit_price_cents": 2500},
        {"sku": "MUG-1", "name": "Stepwise Mug", "quantity": 1, "unit_price_cents": 1200},
    ]
    times = [parse_time(h["at"]) for h in order["history"]]
    assert times == sorted(times)
    scheduled_at = times[-1]
    assert parse_time(order["delivery_date"]) == scheduled_at + timedelta(days=3)

    assert (books_before - books_after, mugs_before - mugs_after) == (2, 1)
    assert len(emails) == 1
    email = emails[0]
    assert email.dedupe_key == f"order-confirmation:{order_id}"
    assert email.recipient == "ada@example.com"
    assert "Total: 62.00" in email.body and "2 x The Stepwise Book" in email.body
    assert email.sent_at is None  # no SMTP_HOST: written to the outbox only


async def test_the_declined_card_ends_payment_failed_after_exactly_three_attempts(
    any_db_url: str,
) -> None:
    async with orders_app(any_db_url) as client:
        engine = engine_of(client)
        before = await stock_of(engine, "BOOK-1")
        _, headers = await sign_up(client, "ada@example.com")
        created = await place_order(
            client,
            {**headers, "X-Trace-Id": "trace-declined"},
            [{"sku": "BOOK-1", "quantity": 1}],
            card_number=DECLINED_CARD,
        )
        order = await await_final(client, headers, created.json()["id"])

        async def payment_runs() -> list[dict[str, Any]] | None:
            trace = (await client.get("/workbench/api/traces/trace-declined")).json()
            runs = [r for r in trace.get("runs", []) if r["step"] == "ProcessPayment"]
            return runs if len(runs) >= 3 else None

        runs = await eventually(payment_runs)
        trace = (await client.get("/workbench/api/traces/trace-declined")).json()
        after = await stock_of(engine, "BOOK-1")
        emails = await outbox(engine)

    assert order["status"] == "payment_failed"
    assert order["card_last4"] == "0002"
    assert order["payment_attempts"] == 3
    assert [h["status"] for h in order["history"]] == ["pending", "payment_failed"]
    assert order["history"][-1]["detail"] == "declined after 3 attempts (card_declined)"
    assert [(r["attempt"], r["outcome"]) for r in runs] == [(1, "error"), (2, "error"), (3, "ok")]
    assert "card_declined" in runs[0]["error"]
    payment_deliveries = [d for d in trace["deliveries"] if d["step"] == "ProcessPayment"]
    assert [(d["status"], d["attempts"]) for d in payment_deliveries] == [("done", 3)]
    # Nothing after the payment ran: no stock taken, no email, and the failure was published.
    assert after == before
    assert emails == []
    assert "UpdateInventory" not in trace["steps"]
    assert "payment.failed" in {e["topic"] for e in trace["events"]}


async def test_two_orders_racing_for_the_last_mug_leave_one_out_of_stock(
    any_db_url: str,
) -> None:
    async with orders_app(any_db_url, worker_concurrency=8) as client:
        engine = engine_of(client)
        await set_stock(engine, "MUG-1", 1)
        _, ada = await sign_up(client, "ada@example.com")
        _, bob = await sign_up(client, "bob@example.com")
        mug = [{"sku": "MUG-1", "quantity": 1}]
        created = await asyncio.gather(place_order(client, ada, mug), place_order(client, bob, mug))
        assert [c.status_code for c in created] == [201, 201]
        orders = await asyncio.gather(
            await_final(client, ada, created[0].json()["id"]),
            await_final(client, bob, created[1].json()["id"]),
        )
        stock = await stock_of(engine, "MUG-1")
        emails = await outbox(engine)

    assert sorted(o["status"] for o in orders) == ["delivery_scheduled", "out_of_stock"]
    assert stock == 0
    assert len(emails) == 1
    loser = next(o for o in orders if o["status"] == "out_of_stock")
    assert [h["status"] for h in loser["history"]] == ["pending", "paid", "out_of_stock"]
    assert loser["history"][-1]["detail"] == "not enough stock of MUG-1"


async def test_an_order_larger_than_the_stock_reserves_nothing(db_url: str) -> None:
    async with orders_app(db_url) as client:
        engine = engine_of(client)
        await set_stock(engine, "TSHIRT-M", 2)
        books = await stock_of(engine, "BOOK-1")
        _, headers = await sign_up(client, "ada@example.com")
        created = await place_order(
            client,
            headers,
            [{"sku": "BOOK-1", "quantity": 1}, {"sku": "TSHIRT-M", "quantity": 3}],
        )
        order = await await_final(client, headers, created.json()["id"])
        assert order["status"] == "out_of_stock"
        assert await stock_of(engine, "BOOK-1") == books
        assert await stock_of(engine, "TSHIRT-M") == 2


async def test_the_catalogue_lists_each_product_with_its_stock(db_url: str) -> None:
    async with orders_app(db_url) as client:
        _, headers = await sign_up(client, "ada@example.com")
        listed = await client.get("/products", headers=headers)
        anonymous = await client.get("/products")
    assert listed.status_code == 200
    assert [(p["sku"], p["price_cents"]) for p in listed.json()["items"]] == [
        ("BOOK-1", 2500),
        ("MUG-1", 1200),
        ("TSHIRT-M", 2000),
    ]
    assert all(p["stock"] > 0 for p in listed.json()["items"])
    assert anonymous.status_code == 401
