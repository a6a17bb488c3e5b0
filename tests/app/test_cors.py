"""CORS from the settings: preflights, simple requests, refusals in the envelope."""

from __future__ import annotations

import httpx

from tests.accounts import assert_envelope
from tests.conftest import make_settings, running_app

ORIGIN = "https://app.example.com"


def _preflight(
    method: str = "PATCH", headers: str = "authorization, content-type"
) -> dict[str, str]:
    return {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_a_preflight_from_an_allowed_origin_is_answered_from_the_settings(
    db_url: str,
) -> None:
    settings = make_settings(
        db_url,
        cors_origins=f"{ORIGIN},https://admin.example.com",
        cors_methods="GET,PATCH",
        cors_headers="Authorization,Content-Type",
        cors_max_age=120,
    )
    async with running_app(settings) as client:
        response = await client.options("/users/123", headers=_preflight())
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {"GET", "PATCH"}
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert response.headers["access-control-max-age"] == "120"
    assert "access-control-allow-credentials" not in response.headers


async def test_a_preflight_from_another_origin_or_for_another_method_is_an_envelope(
    db_url: str,
) -> None:
    settings = make_settings(db_url, cors_origins=ORIGIN, cors_methods="GET")
    async with running_app(settings) as client:
        evil = await client.options(
            "/users", headers={**_preflight("GET"), "Origin": "https://evil.example"}
        )
        delete = await client.options("/users", headers=_preflight("DELETE"))
        odd_header = await client.options("/users", headers=_preflight("GET", "x-secret"))
    for response in (evil, delete, odd_header):
        assert_envelope(response, 400, "cors_rejected")
        assert "access-control-allow-methods" not in response.headers
    assert evil.headers.get("access-control-allow-origin") is None


async def test_responses_to_an_allowed_origin_expose_the_trace_and_limit_headers(
    client: httpx.AsyncClient,
) -> None:
    origin = "http://localhost:3000"
    ok = await client.get("/health", headers={"Origin": origin})
    denied = await client.get("/users", headers={"Origin": origin})
    foreign = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == origin
    exposed = ok.headers["access-control-expose-headers"].lower()
    for header in ("x-trace-id", "retry-after", "x-ratelimit-remaining", "content-language"):
        assert header in exposed
    # Errors carry the CORS headers too, so a browser script can read the envelope.
    assert_envelope(denied, 401, "unauthorized")
    assert denied.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-origin" not in foreign.headers


def test_credentials_with_a_wildcard_origin_are_refused_at_start_up(db_url: str) -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
        make_settings(db_url, cors_origins="*", cors_allow_credentials=True)
