"""Bearer tokens: only well-signed, unexpired tokens of existing users sign anyone in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from app.settings import DEV_JWT_SECRET
from tests.accounts import (
    admin_settings,
    assert_envelope,
    bearer,
    login,
    register,
    sign_in_admin,
    sign_up,
)
from tests.conftest import make_settings, running_app

INVALID_TOKEN = {
    "en": "The access token is invalid or has expired.",
    "vi": "Mã truy cập không hợp lệ hoặc đã hết hạn.",
    "ja": "アクセストークンが無効か、有効期限が切れています。",
}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(sub: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": sub, "role": "user", "iat": now, "exp": now + 600, "iss": "stepwise"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forge(kind: str, sub: str, good_token: str) -> str:
    """A token that must be refused, of the given kind, for the user `sub`."""
    if kind == "alg none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(sub))}."
    if kind == "another secret":
        return jwt.encode(_claims(sub), "x" * 48, algorithm="HS256")
    if kind == "another algorithm":
        return jwt.encode(_claims(sub), DEV_JWT_SECRET, algorithm="HS512")
    if kind == "expired":
        past = int(time.time()) - 3600
        return jwt.encode(_claims(sub, iat=past - 600, exp=past), DEV_JWT_SECRET, algorithm="HS256")
    if kind == "no expiry":
        return jwt.encode(_claims(sub, exp=None), DEV_JWT_SECRET, algorithm="HS256")
    if kind == "another issuer":
        return jwt.encode(_claims(sub, iss="someone-else"), DEV_JWT_SECRET, algorithm="HS256")
    if kind == "role tampered":
        header, _payload, signature = good_token.split(".")
        return f"{header}.{_b64(_claims(sub, role='admin'))}.{signature}"
    if kind == "unknown role":
        return jwt.encode(_claims(sub, role="root"), DEV_JWT_SECRET, algorithm="HS256")
    if kind == "unknown user":
        return jwt.encode(_claims(str(uuid.uuid4())), DEV_JWT_SECRET, algorithm="HS256")
    if kind == "subject not an id":
        return jwt.encode(_claims("1 OR 1=1"), DEV_JWT_SECRET, algorithm="HS256")
    if kind == "garbage":
        return "not.a.token"
    if kind == "huge":
        return "a" * 20_000
    raise AssertionError(kind)


KINDS = [
    "alg none",
    "another secret",
    "another algorithm",
    "expired",
    "no expiry",
    "another issuer",
    "role tampered",
    "unknown role",
    "unknown user",
    "subject not an id",
    "garbage",
    "huge",
]


# Forging an HS512 token with the 42-byte development secret is the point of one case.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_every_forged_or_stale_token_is_a_401_invalid_token(
    client: httpx.AsyncClient,
) -> None:
    user, headers = await sign_up(client, "victim@example.com")
    good = headers["Authorization"].removeprefix("Bearer ")
    assert (await client.get("/auth/me", headers=headers)).status_code == 200
    for kind in KINDS:
        response = await client.get("/auth/me", headers=bearer(_forge(kind, user["id"], good)))
        body = assert_envelope(response, 401, "invalid_token")
        reason = "expired" if kind == "expired" else "invalid"
        assert body["details"] == [{"reason": reason}], kind
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("language", ["en", "vi", "ja"])
async def test_the_invalid_token_message_is_translated(
    client: httpx.AsyncClient, language: str
) -> None:
    response = await client.get(
        "/users", headers={"Authorization": "Bearer nope", "Accept-Language": language}
    )
    assert assert_envelope(response, 401, "invalid_token")["error"] == INVALID_TOKEN[language]


async def test_a_scheme_other_than_bearer_is_an_invalid_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/users", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_envelope(response, 401, "invalid_token")


async def test_public_routes_ignore_a_stale_token_so_its_holder_can_log_in_again(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "stale@example.com")
    stale = bearer(_forge("expired", user["id"], ""))
    assert (await client.get("/health", headers=stale)).status_code == 200
    response = await client.post(
        "/auth/login",
        json={"email": "stale@example.com", "password": "correct horse battery"},
        headers=stale,
    )
    assert response.status_code == 200


async def test_the_token_of_a_deleted_user_is_refused(any_db_url: str) -> None:
    async with running_app(admin_settings(any_db_url)) as client:
        user, headers = await sign_up(client, "leaving@example.com")
        assert (await client.get("/auth/me", headers=headers)).status_code == 200
        admin = await sign_in_admin(client)
        assert (await client.delete(f"/users/{user['id']}", headers=admin)).status_code == 204
        response = await client.get("/auth/me", headers=headers)
    assert_envelope(response, 401, "invalid_token")


async def test_roles_come_from_the_account_not_from_an_old_token(db_url: str) -> None:
    """Promotion and demotion take effect on tokens already issued."""
    async with running_app(admin_settings(db_url)) as client:
        user, headers = await sign_up(client, "rising@example.com")
        other, _ = await sign_up(client, "other@example.com")
        admin = await sign_in_admin(client)
        promote = await client.patch(f"/users/{user['id']}", json={"role": "admin"}, headers=admin)
        assert promote.json()["role"] == "admin"
        # The token still says role=user; the account says admin.
        victim = await client.get(f"/users/{other['id']}", headers=headers)
        assert victim.status_code == 200
        demote = await client.patch(f"/users/{user['id']}", json={"role": "user"}, headers=admin)
        assert demote.status_code == 200
        response = await client.delete(f"/users/{other['id']}", headers=headers)
    assert_envelope(response, 403, "forbidden")


def _rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


async def test_rs256_signs_with_the_private_key_and_refuses_the_public_key_as_a_secret(
    db_url: str, tmp_path: Any
) -> None:
    private, public = _rsa_pem()
    key_file = tmp_path / "jwt.pem"
    key_file.write_text(private)
    settings = make_settings(db_url, jwt_algorithm="RS256", jwt_private_key_file=key_file)
    async with running_app(settings) as client:
        user = await register(client, "rsa@example.com")
        token = await login(client, "rsa@example.com")
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        claims = jwt.decode(token, public, algorithms=["RS256"], issuer="stepwise")
        assert claims["sub"] == user["id"]
        assert (await client.get("/auth/me", headers=bearer(token))).status_code == 200
        # The classic confusion attack: an HMAC token keyed with the (public) verifying key.
        header = _b64({"alg": "HS256", "typ": "JWT"})
        payload = _b64(_claims(user["id"]))
        signature = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
        forged = (
            f"{header}.{payload}."
            + base64.urlsafe_b64encode(signature.digest()).rstrip(b"=").decode()
        )
        response = await client.get("/auth/me", headers=bearer(forged))
    assert_envelope(response, 401, "invalid_token")


def test_production_refuses_the_development_secret_and_asymmetric_algorithms_need_a_key(
    db_url: str,
) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        make_settings(db_url, env="production")
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        make_settings(db_url, env="production", jwt_secret="too-short")
    assert make_settings(db_url, env="production", jwt_secret="s" * 40).is_production
    with pytest.raises(ValidationError, match="JWT_PRIVATE_KEY"):
        make_settings(db_url, jwt_algorithm="RS256")
