"""Errors of the platform itself (not of a step) use the envelope: 404, 405, 401, 403."""

from __future__ import annotations

import httpx

from tests.accounts import assert_envelope, sign_up


async def test_unknown_routes_and_wrong_methods_are_envelopes(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/nowhere"), 404, "not_found")
    wrong = await client.put("/health")
    assert_envelope(wrong, 405, "method_not_allowed")


async def test_a_405_lists_every_method_of_the_path_in_allow(client: httpx.AsyncClient) -> None:
    """RFC 9110: `Allow` names what the resource supports. Found by the schemathesis fuzz:
    Starlette named only the methods of the first route whose path matched (`POST` alone for
    `/users`, which also answers GET)."""
    response = await client.request("OPTIONS", "/users")
    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    user_item = await client.put("/users/some-id")
    assert user_item.headers["allow"] == "DELETE, GET, PATCH"


async def test_a_route_that_needs_a_user_says_how_to_authenticate(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/users")
    body = assert_envelope(response, 401, "unauthorized")
    assert body["error"] == "Authentication is required."
    assert response.headers["www-authenticate"] == "Bearer"


async def test_without_a_token_the_answer_is_401_before_the_body_is_even_read(
    client: httpx.AsyncClient,
) -> None:
    """Found by the schemathesis fuzz: an anonymous POST /users with a bad body was told what
    was wrong with it (400) instead of that it must sign in; and a user got a 400 from an admin
    route. Auth levels are checked before the body is parsed."""
    for body in (b'{"email": ""}', b"[" * 10_000, b"not json"):
        response = await client.post(
            "/users", content=body, headers={"Content-Type": "application/json"}
        )
        assert_envelope(response, 401, "unauthorized")
    user, headers = await sign_up(client, "plain@example.com")
    response = await client.patch(
        f"/users/{user['id']}",
        content=b"{",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert_envelope(response, 400, "validation_failed")  # signed in: now the body counts


async def test_an_admin_route_is_403_for_a_user(client: httpx.AsyncClient) -> None:
    user, headers = await sign_up(client, "plain@example.com")
    response = await client.delete(
        f"/users/{user['id']}", headers={**headers, "Accept-Language": "vi"}
    )
    body = assert_envelope(response, 403, "forbidden")
    assert body["error"] == "Bạn không có quyền thực hiện thao tác này."
