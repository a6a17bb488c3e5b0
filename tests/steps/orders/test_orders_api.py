"""The orders API at its edges: what it refuses, and who sees which order."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.accounts import assert_envelope, sign_in_admin, sign_up
from tests.steps.orders.support import orders_app, place_order

BOOK = [{"sku": "BOOK-1", "quantity": 1}]


async def test_an_unknown_sku_is_a_400_naming_each_unknown_sku(db_url: str) -> None:
    async with orders_app(db_url) as client:
        _, headers = await sign_up(client, "ada@example.com")
        items = [
            {"sku": "BOOK-1", "quantity": 1},
            {"sku": "NOPE-1", "quantity": 1},
            {"sku": "book-1", "quantity": 2},
        ]
        response = await place_order(client, headers, items)
        vietnamese = await place_order(
            client, {**headers, "Accept-Language": "vi"}, [{"sku": "NOPE", "quantity": 1}]
        )
        orders = (await client.get("/orders", headers=headers)).json()
    body = assert_envelope(response, 400, "unknown_sku")
    assert body["error"] == "The catalogue has no product with this SKU."
    assert body["details"] == [
        {"field": "items.1.sku", "sku": "NOPE-1"},
        {"field": "items.2.sku", "sku": "book-1"},
    ]
    assert assert_envelope(vietnamese, 400, "unknown_sku")["error"].startswith("Danh mục")
    assert orders["total"] == 0  # nothing was created


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [
        ({"items": []}, "items", "too_short"),
        ({}, "items", "missing"),
        ({"items": [{"sku": "BOOK-1", "quantity": 1}] * 51}, "items", "too_long"),
        ({"items": [{"sku": "BOOK-1", "quantity": 0}]}, "items.0.quantity", "greater_than_equal"),
        ({"items": [{"sku": "BOOK-1", "quantity": 101}]}, "items.0.quantity", "less_than_equal"),
        ({"items": [{"sku": "BOOK-1", "quantity": "2"}]}, "items.0.quantity", "int_type"),
        ({"items": [{"sku": "BOOK-1", "quantity": 1.5}]}, "items.0.quantity", "int_type"),
        ({"items": [{"sku": "", "quantity": 1}]}, "items.0.sku", "string_too_short"),
        ({"items": [{"quantity": 1}]}, "items.0.sku", "missing"),
        ({"items": [{"sku": "BOOK-1", "quantity": 1, "price": 0}]}, "items.0.price", None),
        ({"items": BOOK, "card_number": "4242"}, "card_number", "card_number_invalid"),
        ({"items": BOOK, "card_number": "4242424242424241"}, "card_number", "card_number_invalid"),
        ({"items": BOOK, "card_number": "4242-4242-4242-4242"}, "card_number", None),
        ({"items": BOOK, "card_number": "\uff14\uff12" * 8}, "card_number", None),
        ({"items": BOOK, "card_number": "1" * 20}, "card_number", "card_number_invalid"),
        ({"items": BOOK, "card_number": 4242424242424242}, "card_number", "string_type"),
        ({"items": BOOK, "status": "paid"}, "status", "extra_forbidden"),
    ],
)
async def test_a_bad_order_is_a_400_naming_the_field(
    db_url: str, body: dict[str, Any], field: str, error_type: str | None
) -> None:
    async with orders_app(db_url) as client:
        _, headers = await sign_up(client, "ada@example.com")
        response = await client.post("/orders", json=body, headers=headers)
    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert [d["field"] for d in details] == [field]
    if error_type is not None:
        assert details[0]["type"] == error_type


async def test_the_same_sku_twice_is_one_line_and_only_the_last_four_digits_are_kept(
    db_url: str,
) -> None:
    async with orders_app(db_url) as client:
        _, headers = await sign_up(client, "ada@example.com")
        response = await place_order(
            client,
            headers,
            [{"sku": "MUG-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 3}],
            card_number=" 5555 5555 5555 4444 ",
        )
    assert response.status_code == 201, response.text
    order = response.json()
    assert [(i["sku"], i["quantity"]) for i in order["items"]] == [("MUG-1", 5)]
    assert order["total_cents"] == 5 * 1200
    assert order["card_last4"] == "4444"
    assert "5555555555554444" not in response.text


async def test_orders_need_a_signed_in_user(db_url: str) -> None:
    async with orders_app(db_url) as client:
        assert_envelope(await client.post("/orders", json={"items": BOOK}), 401, "unauthorized")
        assert_envelope(await client.get("/orders"), 401, "unauthorized")
        assert_envelope(await client.get(f"/orders/{uuid.uuid4()}"), 401, "unauthorized")


async def test_an_order_is_seen_by_its_owner_and_admins_only(any_db_url: str) -> None:
    async with orders_app(any_db_url) as client:
        _, ada = await sign_up(client, "ada@example.com")
        _, bob = await sign_up(client, "bob@example.com")
        admin = await sign_in_admin(client)
        order_id = (await place_order(client, ada, BOOK)).json()["id"]
        by_owner = await client.get(f"/orders/{order_id}", headers=ada)
        by_admin = await client.get(f"/orders/{order_id}", headers=admin)
        by_other = await client.get(f"/orders/{order_id}", headers=bob)
        missing = await client.get(f"/orders/{uuid.uuid4()}", headers=bob)
        not_an_id = await client.get("/orders/not-a-uuid", headers=ada)
    assert by_owner.status_code == 200 and by_owner.json()["id"] == order_id
    assert by_admin.status_code == 200 and by_admin.json()["id"] == order_id
    # Another user's order is as absent as one that does not exist: ids cannot be probed.
    other = assert_envelope(by_other, 404, "not_found")
    assert other["error"] == "Order not found."
    assert assert_envelope(missing, 404, "not_found")["error"] == other["error"]
    assert_envelope(not_an_id, 404, "not_found")


async def test_the_order_list_shows_only_your_orders_newest_first(db_url: str) -> None:
    async with orders_app(db_url) as client:
        _, ada = await sign_up(client, "ada@example.com")
        _, bob = await sign_up(client, "bob@example.com")
        mine = [(await place_order(client, ada, BOOK)).json()["id"] for _ in range(3)]
        theirs = (await place_order(client, bob, BOOK)).json()["id"]
        first_page = (await client.get("/orders?limit=2", headers=ada)).json()
        second_page = (await client.get("/orders?limit=2&offset=2", headers=ada)).json()
        bobs = (await client.get("/orders", headers=bob)).json()
        bad_limit = await client.get("/orders?limit=0", headers=ada)
    assert first_page["total"] == 3 and second_page["total"] == 3
    listed = [o["id"] for o in first_page["items"] + second_page["items"]]
    assert listed == list(reversed(mine))
    assert [o["id"] for o in bobs["items"]] == [theirs]
    assert set(first_page["items"][0]) == {
        "id",
        "status",
        "total_cents",
        "card_last4",
        "delivery_date",
        "created_at",
    }
    assert_envelope(bad_limit, 400, "validation_failed")
