"""Accounts for tests, made through the HTTP API: sign up, log in, the settings' admin."""

from __future__ import annotations

from typing import Any

import httpx

from app.settings import Settings
from tests.conftest import make_settings

PASSWORD = "correct horse battery"
ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin-password-123"


def admin_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings whose start-up creates the admin ADMIN_EMAIL / ADMIN_PASSWORD."""
    return make_settings(
        db_url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD, **overrides
    )


async def register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, name: str | None = "Tester"
) -> dict[str, Any]:
    response = await client.post(
        "/auth/register", json={"email": email, "password": password, "name": name}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def sign_up(client: httpx.AsyncClient, email: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Register and log in: (the account, headers carrying its token)."""
    user = await register(client, email)
    return user, bearer(await login(client, email))


async def sign_in_admin(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; returns its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code", "details", "trace_id"}, body
    assert body["code"] == code, body
    assert body["trace_id"] == response.headers["x-trace-id"]
    assert isinstance(body["error"], str) and body["error"]
    return body
