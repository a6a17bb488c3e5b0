"""Errors of the platform itself (not of a step) use the envelope: 404, 405, 401, 403."""

from __future__ import annotations

import httpx

from tests.accounts import assert_envelope, sign_up


async def test_unknown_routes_and_wrong_methods_are_envelopes(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/nowhere"), 404, "not_found")
    wrong = await client.put("/health")
    assert_envelope(wrong, 405, "method_not_allowed")


async def test_a_route_that_needs_a_user_says_how_to_authenticate(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/users")
    body = assert_envelope(response, 401, "unauthorized")
    assert body["error"] == "Authentication is required."
    assert response.headers["www-authenticate"] == "Bearer"


async def test_an_admin_route_is_403_for_a_user(client: httpx.AsyncClient) -> None:
    user, headers = await sign_up(client, "plain@example.com")
    response = await client.delete(
        f"/users/{user['id']}", headers={**headers, "Accept-Language": "vi"}
    )
    body = assert_envelope(response, 403, "forbidden")
    assert body["error"] == "Bạn không có quyền thực hiện thao tác này."
