"""The users API: create (the article's CreateUser), list, read, change, delete."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.accounts import admin_settings, assert_envelope, sign_in_admin, sign_up
from tests.conftest import running_app

ANN = {"email": "ann@example.com", "name": "Ann", "age": 30}


async def test_create_user_returns_201_with_the_new_user(client: httpx.AsyncClient) -> None:
    _, headers = await sign_up(client, "creator@example.com")
    response = await client.post(
        "/users", json={**ANN, "email": "Ann@Example.com"}, headers=headers
    )
    assert response.status_code == 201
    user = response.json()
    assert uuid.UUID(user["id"])
    assert {k: user[k] for k in ANN} == ANN
    assert user["role"] == "user"
    assert user["created_at"].endswith("Z")
    fetched = await client.get(f"/users/{user['id']}", headers=headers)
    assert fetched.json() == user


async def test_create_user_needs_a_signed_in_user(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.post("/users", json=ANN), 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [
        ({**ANN, "age": 17}, "age", "greater_than_equal"),
        ({**ANN, "age": 30.5}, "age", "int_type"),
        ({**ANN, "age": "30"}, "age", "int_type"),
        ({**ANN, "age": True}, "age", "int_type"),
        ({**ANN, "name": "A"}, "name", "string_too_short"),
        ({**ANN, "name": "A" * 101}, "name", "string_too_long"),
        ({**ANN, "email": "ann@"}, "email", "email_invalid"),
        ({**ANN, "role": "admin"}, "role", "extra_forbidden"),
        ({"name": "Ann", "age": 30}, "email", "missing"),
    ],
)
async def test_create_user_validates_like_the_article(
    client: httpx.AsyncClient, body: dict[str, object], field: str, error_type: str
) -> None:
    _, headers = await sign_up(client, "validator@example.com")
    response = await client.post("/users", json=body, headers=headers)
    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert [(d["field"], d["type"]) for d in details] == [(field, error_type)]


async def test_a_taken_email_is_409_on_create_and_on_update(any_db_url: str) -> None:
    async with running_app(admin_settings(any_db_url)) as client:
        _, headers = await sign_up(client, "first@example.com")
        await client.post("/users", json=ANN, headers=headers)
        duplicate = await client.post(
            "/users", json={**ANN, "email": "ANN@example.com"}, headers=headers
        )
        me = (await client.get("/auth/me", headers=headers)).json()
        rename = await client.patch(
            f"/users/{me['id']}", json={"email": "ann@example.com"}, headers=headers
        )
    assert_envelope(duplicate, 409, "email_taken")
    assert_envelope(rename, 409, "email_taken")


async def test_concurrent_creates_of_one_email_give_one_201_and_409s(any_db_url: str) -> None:
    async with running_app(admin_settings(any_db_url)) as client:
        headers = await sign_in_admin(client)
        responses = await asyncio.gather(
            *(client.post("/users", json=ANN, headers=headers) for _ in range(6))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409], [r.text for r in responses]


async def test_list_users_pages_with_limit_offset_and_total(any_db_url: str) -> None:
    async with running_app(admin_settings(any_db_url)) as client:
        headers = await sign_in_admin(client)
        for i in range(5):
            created = await client.post(
                "/users",
                json={"email": f"u{i}@example.com", "name": f"User {i}", "age": 20 + i},
                headers=headers,
            )
            assert created.status_code == 201
        first = (await client.get("/users?limit=2", headers=headers)).json()
        rest = (await client.get("/users?limit=10&offset=2", headers=headers)).json()
        bad = await client.get("/users?limit=0&offset=-1", headers=headers)
    assert (first["total"], first["limit"], first["offset"]) == (6, 2, 0)
    assert len(first["items"]) == 2 and len(rest["items"]) == 4
    emails = [u["email"] for u in first["items"] + rest["items"]]
    assert len(set(emails)) == 6
    assert emails[2:] == [f"u{i}@example.com" for i in range(1, 5)]  # oldest first
    details = assert_envelope(bad, 400, "validation_failed")["details"]
    assert {(d["field"], d["type"]) for d in details} == {
        ("limit", "greater_than_equal"),
        ("offset", "greater_than_equal"),
    }


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "User not found."),
        ("vi", "Không tìm thấy người dùng."),
        ("ja", "ユーザーが見つかりません。"),
    ],
)
async def test_an_unknown_id_is_404(client: httpx.AsyncClient, language: str, message: str) -> None:
    _, headers = await sign_up(client, "looker@example.com")
    headers["Accept-Language"] = language
    for user_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = await client.get(f"/users/{user_id}", headers=headers)
        assert assert_envelope(response, 404, "not_found")["error"] == message


async def test_a_user_changes_their_own_account_but_not_someone_elses(
    client: httpx.AsyncClient,
) -> None:
    me, headers = await sign_up(client, "self@example.com")
    other, _ = await sign_up(client, "neighbour@example.com")
    changed = await client.patch(
        f"/users/{me['id']}", json={"name": "New Name", "age": 40}, headers=headers
    )
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["age"]) == ("New Name", 40)
    assert changed.json()["updated_at"] > me["updated_at"]
    others = await client.patch(
        f"/users/{other['id']}",
        json={"name": "Hacked"},
        headers={**headers, "Accept-Language": "ja"},
    )
    body = assert_envelope(others, 403, "forbidden")
    assert body["error"] == "変更できるのは自分のアカウントのみです。"
    # An id that does not exist is 403 as well for a non-admin: ids cannot be probed.
    assert_envelope(
        await client.patch(f"/users/{uuid.uuid4()}", json={"name": "X y"}, headers=headers),
        403,
        "forbidden",
    )
    unchanged = await client.get(f"/users/{other['id']}", headers=headers)
    assert unchanged.json()["name"] == "Tester"


async def test_only_an_admin_changes_roles(db_url: str) -> None:
    async with running_app(admin_settings(db_url)) as client:
        me, headers = await sign_up(client, "climber@example.com")
        escalate = await client.patch(f"/users/{me['id']}", json={"role": "admin"}, headers=headers)
        admin = await sign_in_admin(client)
        promoted = await client.patch(f"/users/{me['id']}", json={"role": "admin"}, headers=admin)
        missing = await client.patch(f"/users/{uuid.uuid4()}", json={"name": "Xy"}, headers=admin)
    assert_envelope(escalate, 403, "forbidden")
    assert promoted.json()["role"] == "admin"
    assert_envelope(missing, 404, "not_found")


async def test_patch_refuses_nulls_and_unknown_fields(client: httpx.AsyncClient) -> None:
    me, headers = await sign_up(client, "nulls@example.com")
    for body, error_type in (
        ({"name": None}, "string_type"),
        ({"age": None}, "int_type"),
        ({"password_hash": "x"}, "extra_forbidden"),
    ):
        response = await client.patch(f"/users/{me['id']}", json=body, headers=headers)
        details = assert_envelope(response, 400, "validation_failed")["details"]
        assert details[0]["type"] == error_type, body


async def test_only_an_admin_deletes_and_a_deleted_user_is_gone(any_db_url: str) -> None:
    async with running_app(admin_settings(any_db_url)) as client:
        user, headers = await sign_up(client, "doomed@example.com")
        by_user = await client.delete(f"/users/{user['id']}", headers=headers)
        admin = await sign_in_admin(client)
        deleted = await client.delete(f"/users/{user['id']}", headers=admin)
        again = await client.delete(f"/users/{user['id']}", headers=admin)
        fetched = await client.get(f"/users/{user['id']}", headers=admin)
    assert_envelope(by_user, 403, "forbidden")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_envelope(again, 404, "not_found")
    assert_envelope(fetched, 404, "not_found")


@pytest.mark.parametrize("name", ["Ann\x00", "Ann\nLee", "Ann\u0085"])
async def test_names_with_control_characters_are_refused_on_every_database(
    any_db_url: str, name: str
) -> None:
    """Postgres cannot store NUL in text: it must be a 400, never a 500 (found by the fuzz)."""
    async with running_app(admin_settings(any_db_url)) as client:
        me, headers = await sign_up(client, "control@example.com")
        created = await client.post("/users", json={**ANN, "name": name}, headers=headers)
        changed = await client.patch(f"/users/{me['id']}", json={"name": name}, headers=headers)
    for response in (created, changed):
        details = assert_envelope(response, 400, "validation_failed")["details"]
        assert [(d["field"], d["type"]) for d in details] == [("name", "string_control_characters")]
