"""POST /auth/register, POST /auth/login, GET /auth/me, the first admin and `create-admin`."""

from __future__ import annotations

import statistics
import time

import httpx
import jwt
import pytest
from sqlalchemy import text

from app.runtime._db import create_engine
from app.settings import DEV_JWT_SECRET
from tests.accounts import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    admin_settings,
    assert_envelope,
    bearer,
    login,
    register,
    sign_in_admin,
    sign_up,
)
from tests.conftest import make_settings, running_app
from tests.support import run_cli

INVALID_CREDENTIALS = {
    "en": "The email or password is incorrect.",
    "vi": "Email hoặc mật khẩu không đúng.",
    "ja": "メールアドレスまたはパスワードが正しくありません。",
}


async def test_register_creates_a_user_account_and_never_shows_the_password(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/auth/register",
        json={"email": "  Ann.Lee@Example.COM ", "password": PASSWORD, "name": "Ann"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "ann.lee@example.com"
    assert (body["name"], body["role"], body["age"]) == ("Ann", "user", None)
    assert PASSWORD not in response.text and "hash" not in response.text
    assert response.headers["x-ratelimit-limit"] == "10"


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "This email address is already registered."),
        ("vi", "Địa chỉ email này đã được đăng ký."),
        ("ja", "このメールアドレスはすでに登録されています。"),
    ],
)
async def test_a_taken_email_is_409_whatever_its_case(
    client: httpx.AsyncClient, language: str, message: str
) -> None:
    await register(client, "taken@example.com")
    response = await client.post(
        "/auth/register",
        json={"email": "TAKEN@Example.com", "password": PASSWORD},
        headers={"Accept-Language": language},
    )
    assert assert_envelope(response, 409, "email_taken")["error"] == message


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "Must be at least 8 characters long."),
        ("vi", "Phải có ít nhất 8 ký tự."),
        ("ja", "8文字以上で入力してください。"),
    ],
)
async def test_a_password_shorter_than_8_characters_is_refused(
    client: httpx.AsyncClient, language: str, message: str
) -> None:
    response = await client.post(
        "/auth/register",
        json={"email": "short@example.com", "password": "1234567"},
        headers={"Accept-Language": language},
    )
    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert details == [{"field": "password", "message": message, "type": "string_too_short"}]


async def test_login_gives_a_bearer_token_with_subject_role_and_expiry(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "token@example.com")
    response = await client.post(
        "/auth/login", json={"email": "Token@Example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = jwt.decode(
        body["access_token"], DEV_JWT_SECRET, algorithms=["HS256"], issuer="stepwise"
    )
    assert claims["sub"] == user["id"]
    assert claims["role"] == "user"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60


@pytest.mark.parametrize("language", ["en", "vi", "ja"])
async def test_a_wrong_password_and_an_unknown_email_get_the_same_401(
    client: httpx.AsyncClient, language: str
) -> None:
    _, headers = await sign_up(client, "known@example.com")
    created = await client.post(
        "/users",
        json={"email": "nopass@example.com", "name": "No Pass", "age": 30},
        headers=headers,
    )
    assert created.status_code == 201
    attempts = {
        "wrong password": {"email": "known@example.com", "password": "not the password"},
        "unknown email": {"email": "nobody@example.com", "password": PASSWORD},
        "no password set": {"email": "nopass@example.com", "password": PASSWORD},
        "not an email": {"email": "known", "password": PASSWORD},
    }
    bodies = {}
    for name, credentials in attempts.items():
        response = await client.post(
            "/auth/login", json=credentials, headers={"Accept-Language": language}
        )
        body = assert_envelope(response, 401, "invalid_credentials")
        body.pop("trace_id")
        bodies[name] = body
    assert all(body == bodies["wrong password"] for body in bodies.values()), bodies
    assert bodies["unknown email"]["error"] == INVALID_CREDENTIALS[language]


async def test_an_unknown_email_takes_as_long_as_a_wrong_password(db_url: str) -> None:
    """With production argon2 costs, a verification is ~0.1 s: an unknown email that skipped it
    would answer some 50 times faster. The medians must stay comparable."""
    settings = make_settings(
        db_url,
        password_hash_time_cost=3,
        password_hash_memory_kib=65_536,
        password_hash_parallelism=4,
    )

    async def timed(client: httpx.AsyncClient, email: str) -> float:
        started = time.perf_counter()
        response = await client.post("/auth/login", json={"email": email, "password": "wrong!!!"})
        assert response.status_code == 401
        return time.perf_counter() - started

    async with running_app(settings) as client:
        await register(client, "timing@example.com")
        await timed(client, "warm-up@example.com")  # the dummy hash is made on first use
        known, unknown = [], []
        for _ in range(5):  # interleaved, so that a change of machine load hits both alike
            known.append(await timed(client, "timing@example.com"))
            unknown.append(await timed(client, "nobody@example.com"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.4 < ratio < 2.5, (known, unknown)


async def test_me_is_the_signed_in_account(client: httpx.AsyncClient) -> None:
    user, headers = await sign_up(client, "me@example.com")
    response = await client.get("/auth/me", headers=headers)
    assert response.status_code == 200
    assert response.json() == user
    assert_envelope(await client.get("/auth/me"), 401, "unauthorized")


async def test_a_stored_hash_is_upgraded_at_login_when_the_argon2_cost_changes(
    db_url: str,
) -> None:
    async def stored_hash() -> str:
        engine = create_engine(db_url)
        async with engine.connect() as conn:
            value = (
                await conn.execute(
                    text("SELECT password_hash FROM users WHERE email = 'rehash@example.com'")
                )
            ).scalar_one()
        await engine.dispose()
        return str(value)

    async with running_app(make_settings(db_url)) as client:
        await register(client, "rehash@example.com")
    assert "m=8192,t=1,p=1" in await stored_hash()
    stronger = make_settings(db_url, password_hash_time_cost=2, password_hash_memory_kib=16_384)
    async with running_app(stronger) as client:
        await login(client, "rehash@example.com")
        assert "m=16384,t=2,p=1" in await stored_hash()
        await login(client, "rehash@example.com")  # the new hash verifies


async def test_the_first_admin_is_created_from_the_settings_once(db_url: str) -> None:
    settings = admin_settings(db_url)
    async with running_app(settings) as client:
        headers = await sign_in_admin(client)
        me = (await client.get("/auth/me", headers=headers)).json()
        assert (me["email"], me["role"]) == (ADMIN_EMAIL, "admin")
    async with running_app(settings) as client:  # a restart changes nothing
        users = (await client.get("/users", headers=await sign_in_admin(client))).json()
    assert [u["email"] for u in users["items"]] == [ADMIN_EMAIL]


async def test_an_existing_account_with_the_admin_email_is_not_promoted(db_url: str) -> None:
    """Whoever registered the address first must not become admin when it is configured."""
    async with running_app(make_settings(db_url)) as client:
        await register(client, ADMIN_EMAIL, password="someone-elses-password")
    async with running_app(admin_settings(db_url)) as client:
        token = await login(client, ADMIN_EMAIL, "someone-elses-password")
        me = (await client.get("/auth/me", headers=bearer(token))).json()
        refused = await client.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    assert me["role"] == "user"
    assert_envelope(refused, 401, "invalid_credentials")


def test_settings_refuse_half_an_admin_or_a_short_admin_password(db_url: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ADMIN_EMAIL and ADMIN_PASSWORD"):
        make_settings(db_url, admin_email=ADMIN_EMAIL)
    with pytest.raises(ValidationError, match="at least 8"):
        make_settings(db_url, admin_email=ADMIN_EMAIL, admin_password="short")


@pytest.mark.slow
async def test_create_admin_makes_or_promotes_an_admin_from_the_command_line(
    db_url: str,
) -> None:
    env = {
        "DATABASE_URL": db_url,
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8192",
    }
    created = run_cli(
        "create-admin", "Boss@Example.com", "--password-stdin", env=env, input="boss-password\n"
    )
    assert created.returncode == 0, created.stderr
    assert "boss@example.com: admin created" in created.stdout

    async with running_app(make_settings(db_url)) as client:
        await register(client, "promote@example.com")
        boss = bearer(await login(client, "boss@example.com", "boss-password"))
        assert (await client.get("/auth/me", headers=boss)).json()["role"] == "admin"

    promoted = run_cli(
        "create-admin", "promote@example.com", "--password-stdin", env=env, input="new-password\n"
    )
    assert promoted.returncode == 0, promoted.stderr
    assert "promoted" in promoted.stdout
    async with running_app(make_settings(db_url)) as client:
        token = await login(client, "promote@example.com", "new-password")
        assert (await client.get("/auth/me", headers=bearer(token))).json()["role"] == "admin"

    bad_email = run_cli("create-admin", "nope", "--password-stdin", env=env, input="long-enough\n")
    short = run_cli("create-admin", "x@example.com", "--password-stdin", env=env, input="short\n")
    assert (bad_email.returncode, short.returncode) == (2, 2)
    assert "not a valid email" in bad_email.stderr
    assert "at least 8 characters" in short.stderr
