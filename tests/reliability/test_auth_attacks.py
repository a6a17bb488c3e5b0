"""Attacks on sign-in: forged and confused tokens, odd Authorization headers, password guessing.

tests/steps/auth/test_tokens.py holds the basic forgeries (alg none, another secret or
algorithm, expired, tampered role, unknown or deleted user, a huge token); this file adds the
variants attackers really try, each of which must be a 401 envelope and never a 500, and the
limits on guessing passwords: per address (`rate_limit` of the Login step) and per account,
across addresses and app instances (`LOGIN_MAX_FAILURES`, docs/auth.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from app.runtime import ManualClock
from app.settings import DEV_JWT_SECRET
from tests.accounts import PASSWORD, assert_envelope, bearer, login, register, sign_up
from tests.conftest import make_settings, running_app
from tests.reliability.figures import count

T0 = 1_900_000_000.0

# -- forging -------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json64(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value).encode())


def _claims(sub: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": sub, "role": "user", "iat": now, "exp": now + 600, "iss": "stepwise"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret, attackers don't."""
    signing_input = f"{_json64(header)}.{_json64(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_forms(key: rsa.RSAPrivateKey) -> dict[str, bytes]:
    """The serializations of a public key that key-confusion exploits try as HMAC secrets."""
    public = key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "PEM": spki,
        "PEM without its last newline": spki.rstrip(b"\n"),
        "PKCS#1 PEM": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "DER": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "OpenSSH": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }


async def _refused(client: httpx.AsyncClient, headers: dict[str, str], code: str) -> None:
    """The request to a route that needs a user is a 401 envelope with `code`."""
    response = await client.get("/auth/me", headers=headers)
    assert_envelope(response, 401, code)
    count("auth attacks refused (401)")


def _hs256_forgeries(sub: str, good: str) -> dict[str, str]:
    """Tokens an HS256 app with the development secret must refuse, for the user `sub`."""
    rsa_key = _rsa_key()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    header, payload, signature = good.split(".")
    now = int(time.time())
    forged = {
        **{
            f"alg {alg}": f"{_json64({'alg': alg, 'typ': 'JWT'})}.{_json64(_claims(sub))}."
            for alg in ("None", "NONE", "nOnE")
        },
        "alg none with the real signature": (
            f"{_json64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"
        ),
        "alg none and the payload of a real token": f"{_json64({'alg': 'none'})}.{payload}.",
        "signed RS256 with someone's RSA key": jwt.encode(
            _claims(sub), _pem(rsa_key), algorithm="RS256"
        ),
        "signed ES256 with someone's EC key": jwt.encode(_claims(sub), ec_key, algorithm="ES256"),
        "HS256 with an empty secret": _hmac_token({"alg": "HS256"}, _claims(sub), b""),
        "kid pointing at /dev/null, empty secret": _hmac_token(
            {"alg": "HS256", "kid": "../../../../dev/null"}, _claims(sub), b""
        ),
        "jku to the attacker's keys": jwt.encode(
            _claims(sub),
            _pem(rsa_key),
            algorithm="RS256",
            headers={"jku": "http://attacker.example/jwks.json"},
        ),
        "another user's id under the real signature": (
            f"{header}.{_json64(_claims(str(uuid.uuid4())))}.{signature}"
        ),
        "not valid before an hour from now": jwt.encode(
            _claims(sub, nbf=now + 3600), DEV_JWT_SECRET, algorithm="HS256"
        ),
        "issued an hour from now": jwt.encode(
            _claims(sub, iat=now + 3600, exp=now + 7200), DEV_JWT_SECRET, algorithm="HS256"
        ),
        "an audience the app does not have": jwt.encode(
            _claims(sub, aud="another-service"), DEV_JWT_SECRET, algorithm="HS256"
        ),
        "exp as text": jwt.encode(_claims(sub, exp="never"), DEV_JWT_SECRET, algorithm="HS256"),
        "sub as a number": jwt.encode(
            {**_claims(sub), "sub": 12345}, DEV_JWT_SECRET, algorithm="HS256"
        ),
        "no role": jwt.encode(
            {k: v for k, v in _claims(sub).items() if k != "role"},
            DEV_JWT_SECRET,
            algorithm="HS256",
        ),
        "four segments": f"{good}.{signature}",
        "the signature cut short": good[:-10],
        "a header that is not JSON": f"{_b64(b'{not json')}.{payload}.{signature}",
        "a header that is a list": f"{_b64(b'[1,2]')}.{payload}.{signature}",
    }
    return forged


# An HS256 signature made with a key shorter than the hash is the point of some forgeries.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_forged_tokens_of_every_kind_are_401(client: httpx.AsyncClient) -> None:
    user, headers = await sign_up(client, "target@example.com")
    good = headers["Authorization"].removeprefix("Bearer ")
    assert (await client.get("/auth/me", headers=headers)).status_code == 200
    for kind, token in _hs256_forgeries(user["id"], good).items():
        response = await client.get("/auth/me", headers=bearer(token))
        assert response.status_code == 401, (kind, response.text)
        assert_envelope(response, 401, "invalid_token")
        count("auth attacks refused (401)")


async def test_a_token_signed_with_the_public_development_secret_is_refused_elsewhere(
    db_url: str,
) -> None:
    """The development secret is in the repository: an app configured with its own secret must
    not believe a token signed with it (and production refuses to start with it)."""
    settings = make_settings(db_url, jwt_secret="a-secret-of-this-deployment-" + "x" * 20)
    async with running_app(settings) as client:
        user, _ = await sign_up(client, "prod@example.com")
        forged = jwt.encode(_claims(user["id"], role="admin"), DEV_JWT_SECRET, algorithm="HS256")
        await _refused(client, bearer(forged), "invalid_token")


async def test_an_rs256_app_refuses_key_confusion_and_tokens_of_other_keys(
    db_url: str, tmp_path: Path
) -> None:
    """The app signs RS256 with its private key. An attacker knows the public key: HS256 tokens
    keyed with it (in every usual serialization), tokens of their own key (also embedded as a
    `jwk` header), and the right key under another algorithm are all refused."""
    key = _rsa_key()
    key_file = tmp_path / "jwt.pem"
    key_file.write_text(_pem(key))
    settings = make_settings(db_url, jwt_algorithm="RS256", jwt_private_key_file=key_file)
    attacker = _rsa_key()
    async with running_app(settings) as client:
        user, headers = await sign_up(client, "rsa-target@example.com")
        assert (await client.get("/auth/me", headers=headers)).status_code == 200
        claims = _claims(user["id"], role="admin")
        forged = {
            f"HS256 keyed with the public key as {form}": _hmac_token(
                {"alg": "HS256", "typ": "JWT"}, claims, secret
            )
            for form, secret in _public_forms(key).items()
        }
        forged["HS256 with the development secret"] = jwt.encode(
            claims, DEV_JWT_SECRET, algorithm="HS256"
        )
        forged["RS256 with the attacker's key"] = jwt.encode(
            claims, _pem(attacker), algorithm="RS256"
        )
        forged["RS256 with the attacker's key, embedded as jwk"] = jwt.encode(
            claims,
            _pem(attacker),
            algorithm="RS256",
            headers={"jwk": RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)},
        )
        forged["the right key, RS512"] = jwt.encode(claims, _pem(key), algorithm="RS512")
        forged["the right key, PS256"] = jwt.encode(claims, _pem(key), algorithm="PS256")
        for kind, token in forged.items():
            response = await client.get("/auth/me", headers=bearer(token))
            assert response.status_code == 401, (kind, response.text)
            assert_envelope(response, 401, "invalid_token")
            count("auth attacks refused (401)")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("{token}", "invalid_token"),  # the token without its scheme
        ("Bearer", "invalid_token"),
        ("Bearer ", "invalid_token"),
        ("Token {token}", "invalid_token"),
        ("JWT {token}", "invalid_token"),
        ("Digest {token}", "invalid_token"),
        ("Bearer {token} {token}", "invalid_token"),
        ("Bearer\t{token}", "invalid_token"),
        ("Bearer " + "A" * 1_000_000, "invalid_token"),  # a 1 MB header
        ("Bearer {token}" + "A" * 100_000, "invalid_token"),
        ("", "invalid_token"),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else value,
)
async def test_an_authorization_header_that_is_not_bearer_and_one_token_is_401(
    client: httpx.AsyncClient, authorization: str, code: str
) -> None:
    _, headers = await sign_up(client, "header@example.com")
    token = headers["Authorization"].removeprefix("Bearer ")
    await _refused(client, {"Authorization": authorization.format(token=token)}, code)


async def test_bytes_that_are_no_text_in_the_header_are_401(client: httpx.AsyncClient) -> None:
    await _refused(client, {"Authorization": b"Bearer \xff\xfe\x01"}, "invalid_token")


async def test_the_token_is_only_read_from_the_authorization_header(
    client: httpx.AsyncClient,
) -> None:
    """Query strings end up in logs and histories: an HTTP request cannot sign in with one
    (only a WebSocket may, as browsers cannot set its headers), nor with a cookie."""
    _, headers = await sign_up(client, "where@example.com")
    token = headers["Authorization"].removeprefix("Bearer ")
    for params in ({"token": token}, {"access_token": token}):
        response = await client.get("/auth/me", params=params)
        assert_envelope(response, 401, "unauthorized")
        count("auth attacks refused (401)")
    response = await client.get("/auth/me", headers={"Cookie": f"access_token={token}"})
    assert_envelope(response, 401, "unauthorized")
    count("auth attacks refused (401)")
    lower_case = await client.get("/auth/me", headers={"Authorization": f"bearer {token}"})
    assert lower_case.status_code == 200  # RFC 6750: the scheme is case-insensitive


# -- guessing passwords --------------------------------------------------------------------------


@asynccontextmanager
async def _app(db_url: str, clock: ManualClock, **overrides: Any) -> AsyncIterator[Any]:
    """The app, and `client_at(address)`: an HTTP client whose peer is that address."""
    async with running_app(make_settings(db_url, **overrides), clock=clock) as client:
        app = client.app  # type: ignore[attr-defined]
        clients: list[httpx.AsyncClient] = []

        def client_at(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 50_000))
            clients.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
            return clients[-1]

        try:
            yield client_at
        finally:
            for c in clients:
                await c.aclose()


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def test_failed_logins_are_limited_per_account_whatever_the_address(db_url: str) -> None:
    clock = ManualClock(T0)
    async with _app(db_url, clock) as client_at:
        await register(client_at("192.0.2.1"), "ann@example.com")
        wrong = [
            await _login(client_at(f"203.0.113.{i}"), "ann@example.com", f"guess-{i}")
            for i in range(10)
        ]
        assert [r.status_code for r in wrong] == [401] * 10
        # The 11th attempt, from yet another address, with the right password: refused unread.
        clock.advance(60)
        locked = await _login(client_at("198.51.100.9"), "Ann@Example.com ", PASSWORD)
        body = assert_envelope(locked, 429, "rate_limited")
        assert body["error"] == (
            "Too many failed sign-in attempts for this account. Try again in 840 seconds."
        )
        assert locked.headers["retry-after"] == "840"
        # Other accounts are not affected.
        await register(client_at("192.0.2.1"), "bob@example.com")
        assert (
            await _login(client_at("203.0.113.1"), "bob@example.com", PASSWORD)
        ).status_code == 200
        # The window ends: the account opens again.
        clock.advance(840)
        assert (
            await _login(client_at("198.51.100.9"), "ann@example.com", PASSWORD)
        ).status_code == 200
    count("auth attacks refused (429)")


@pytest.mark.parametrize(
    ("language", "message"),
    [
        (
            "vi",
            "Có quá nhiều lần đăng nhập thất bại vào tài khoản này. Vui lòng thử lại sau 900 giây.",
        ),
        ("ja", "このアカウントへのログイン失敗が多すぎます。900秒後に再度お試しください。"),
    ],
)
async def test_the_locked_account_answer_is_translated(
    db_url: str, language: str, message: str
) -> None:
    async with _app(db_url, ManualClock(T0), login_max_failures=1) as client_at:
        await _login(client_at("203.0.113.1"), "anyone@example.com", "guess")
        response = await client_at("203.0.113.2").post(
            "/auth/login",
            json={"email": "anyone@example.com", "password": "guess"},
            headers={"Accept-Language": language},
        )
    assert assert_envelope(response, 429, "rate_limited")["error"] == message


async def test_a_success_clears_the_failures_and_unknown_emails_lock_alike(db_url: str) -> None:
    """Only failures count: a user who mistypes now and then is never locked out. And an
    unknown email is locked exactly like a real one, so a 429 tells nothing about accounts."""
    clock = ManualClock(T0)
    async with _app(db_url, clock, login_max_failures=3) as client_at:
        web = client_at("192.0.2.10")
        await register(web, "cara@example.com")
        statuses = []
        for _ in range(3):  # two typos, then the right password: never the third failure
            for password in ("typo", "typo", PASSWORD):
                statuses.append((await _login(web, "cara@example.com", password)).status_code)
        assert statuses == [401, 401, 200] * 3

        answers = {}
        for email in ("cara@example.com", "nobody@example.com"):
            for i in range(3):
                await _login(client_at(f"203.0.113.{i}"), email, "wrong")
            answers[email] = await _login(client_at("198.51.100.1"), email, "wrong")
        bodies = [assert_envelope(r, 429, "rate_limited") for r in answers.values()]
        for body in bodies:
            body.pop("trace_id")
        assert bodies[0] == bodies[1]
        assert {r.headers["retry-after"] for r in answers.values()} == {"900"}
    count("auth attacks refused (429)")


async def test_a_burst_of_parallel_guesses_gets_no_more_than_the_limit(db_url: str) -> None:
    """Attempts are counted before the password is checked: 40 guesses sent at once, from 40
    addresses, get 10 answers of 401 and 30 of 429 (counting only after a failure would let
    them all through)."""
    async with _app(db_url, ManualClock(T0)) as client_at:
        await register(client_at("192.0.2.1"), "dora@example.com")
        guesses = [
            _login(client_at(f"10.0.{i // 200}.{i % 200}"), "dora@example.com", f"guess-{i}")
            for i in range(40)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*guesses))
    assert statuses == [401] * 10 + [429] * 30
    count("auth attacks refused (429)", 30)


async def test_two_app_instances_share_the_failures_of_an_account(any_db_url: str) -> None:
    """The counts live in the database (the state table): a guesser switching between
    instances behind a load balancer gets no more guesses."""
    clock = ManualClock(T0)
    async with (
        _app(any_db_url, clock, db_pool_size=3) as one,
        _app(any_db_url, clock, db_pool_size=3) as two,
    ):
        await register(one("192.0.2.1"), "eve@example.com")
        for i in range(5):
            assert (await _login(one(f"203.0.113.{i}"), "eve@example.com", "x")).status_code == 401
            assert (await _login(two(f"198.51.100.{i}"), "eve@example.com", "y")).status_code == 401
        refused = await _login(two("192.0.2.99"), "eve@example.com", PASSWORD)
    assert_envelope(refused, 429, "rate_limited")
    count("auth attacks refused (429)")


async def test_one_address_trying_many_accounts_is_limited_per_address(db_url: str) -> None:
    """Credential stuffing: one address, a different account each time (so no account reaches
    its limit): the Login step's own limit, 20 a minute per address, stops it."""
    async with _app(db_url, ManualClock(T0)) as client_at:
        stuffer = client_at("203.0.113.66")
        statuses = [
            (await _login(stuffer, f"user{i}@example.com", "Summer2024!")).status_code
            for i in range(21)
        ]
        elsewhere = await _login(client_at("203.0.113.67"), "user0@example.com", "Summer2024!")
    assert statuses == [401] * 20 + [429]
    assert elsewhere.status_code == 401
    count("auth attacks refused (429)")


async def test_the_account_limit_is_off_with_the_rate_limits(db_url: str) -> None:
    async with _app(db_url, ManualClock(T0), rate_limit_enabled=False) as client_at:
        await register(client_at("192.0.2.1"), "free@example.com")
        statuses = [
            (await _login(client_at("192.0.2.1"), "free@example.com", "nope")).status_code
            for _ in range(12)
        ]
        token = await login(client_at("192.0.2.1"), "free@example.com")
    assert statuses == [401] * 12
    assert token
