"""GET /config: environment, version and public settings; no secret, ever."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from app.settings import Settings
from tests.accounts import assert_envelope, sign_up
from tests.conftest import make_settings, running_app


def _secret_values(settings: Settings) -> dict[str, str]:
    """Every secret the settings hold: SecretStr fields, and the database URL (its password)."""
    secrets = {
        name: value.get_secret_value()
        for name in type(settings).model_fields
        if isinstance(value := getattr(settings, name), SecretStr)
    }
    secrets["database_url"] = settings.database_url
    return secrets


async def test_config_shows_the_environment_version_and_public_settings(db_url: str) -> None:
    settings = make_settings(db_url, cors_origins="https://app.example.com")
    async with running_app(settings) as client:
        _, headers = await sign_up(client, "curious@example.com")
        response = await client.get("/config", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["environment"] == "test"
    assert body["version"] == settings.app_version
    assert body["locales"] == ["en", "ja", "vi"]
    assert body["auth"] == {"algorithm": "HS256", "access_token_expires_in": 3600}
    assert body["cors_origins"] == ["https://app.example.com"]


async def test_config_never_shows_a_secret_setting(db_url: str) -> None:
    settings = make_settings(
        db_url,
        jwt_secret="jwt-secret-value-3f9a8b7c6d5e4f3a2b1c",
        admin_email="root@example.com",
        admin_password="admin-password-7e6d5c4b",
        jwt_audience="stepwise-clients",
    )
    secrets = _secret_values(settings)
    assert {"jwt_secret", "admin_password", "database_url"} <= set(secrets)
    async with running_app(settings) as client:
        _, headers = await sign_up(client, "snoop@example.com")
        response = await client.get("/config", headers=headers)
    assert response.status_code == 200
    for name, value in secrets.items():
        assert value not in response.text, f"GET /config shows {name}"
    assert "root@example.com" not in response.text


async def test_config_needs_a_signed_in_user(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/config"), 401, "unauthorized")
