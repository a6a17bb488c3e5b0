"""Rate limits: GET /api/limited (100 a minute per client), any step's `rate_limit`, shared by
every process on one database, X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from pathlib import Path

import httpx
import limits
import pytest
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import text

from app.main import create_app
from app.middleware.ratelimit import StateStorage, client_address, parse_networks
from app.runtime import ManualClock, StepConfigError
from app.runtime._db import create_engine
from tests.accounts import admin_settings, assert_envelope, bearer, login, sign_in_admin, sign_up
from tests.conftest import make_settings, running_app
from tests.runtime.conftest import step_app
from tests.support import write_steps

T0 = 1_900_000_000.0


async def test_the_limited_endpoint_allows_100_a_minute_per_user_then_429(db_url: str) -> None:
    clock = ManualClock(T0)
    async with running_app(make_settings(db_url), clock=clock) as client:
        _, headers = await sign_up(client, "busy@example.com")
        _, other = await sign_up(client, "calm@example.com")
        remaining = []
        for _ in range(100):
            response = await client.get("/api/limited", headers=headers)
            assert response.status_code == 200
            assert response.json() == {"ok": True}
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert remaining == list(range(99, -1, -1))
        assert response.headers["x-ratelimit-limit"] == "100"
        assert response.headers["x-ratelimit-reset"] == str(int(T0 + 60))
        assert "retry-after" not in response.headers

        clock.advance(15)
        refused = await client.get("/api/limited", headers=headers)
        body = assert_envelope(refused, 429, "rate_limited")
        assert body["error"] == "Too many requests. Try again in 45 seconds."
        assert refused.headers["retry-after"] == "45"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == str(int(T0 + 60))

        # Another user has a budget of their own.
        assert (await client.get("/api/limited", headers=other)).status_code == 200

        clock.advance(45)  # the window is over
        again = await client.get("/api/limited", headers=headers)
        assert again.status_code == 200
        assert again.headers["x-ratelimit-remaining"] == "99"
        assert again.headers["x-ratelimit-reset"] == str(int(T0 + 120))


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "Too many requests. Try again in 60 seconds."),
        ("vi", "Quá nhiều yêu cầu. Vui lòng thử lại sau 60 giây."),
        ("ja", "リクエストが多すぎます。60秒後に再度お試しください。"),
    ],
)
async def test_the_429_is_translated(
    tmp_path: Path, db_url: str, language: str, message: str
) -> None:
    files = {
        "tight_step.py": """
            config = {"name": "Tight", "type": "api", "path": "/tight", "method": "GET",
                      "auth": "public", "rate_limit": "1/minute"}
            async def handler(req, ctx):
                return {"status": 200, "body": {"ok": True}}
        """
    }
    async with step_app(tmp_path, db_url, files, clock=ManualClock(T0)) as client:
        assert (await client.get("/tight")).status_code == 200
        response = await client.get("/tight", headers={"Accept-Language": language})
    assert assert_envelope(response, 429, "rate_limited")["error"] == message


async def test_any_step_can_declare_a_limit_and_its_errors_carry_the_headers(
    tmp_path: Path, db_url: str
) -> None:
    files = {
        "lookup_step.py": """
            from app.runtime import NotFound
            config = {"name": "Lookup", "type": "api", "path": "/lookup/{key}", "method": "GET",
                      "auth": "public", "rate_limit": "2 per 10 seconds"}
            async def handler(req, ctx):
                if req.params["key"] == "missing":
                    raise NotFound()
                return {"status": 200, "body": {"key": req.params["key"]}}
        """,
        "free_step.py": """
            config = {"name": "Free", "type": "api", "path": "/free", "method": "GET",
                      "auth": "public"}
            async def handler(req, ctx):
                return {"status": 200, "body": {}}
        """,
    }
    async with step_app(tmp_path, db_url, files, clock=ManualClock(T0)) as client:
        found = await client.get("/lookup/a")
        missing = await client.get("/lookup/missing")
        refused = await client.get("/lookup/a")
        free = [await client.get("/free") for _ in range(5)]
    assert found.headers["x-ratelimit-limit"] == "2"
    assert_envelope(missing, 404, "not_found")
    assert missing.headers["x-ratelimit-remaining"] == "0"
    assert_envelope(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "10"
    assert all(r.status_code == 200 and "x-ratelimit-limit" not in r.headers for r in free)


def test_a_rate_limit_that_cannot_be_read_stops_start_up(tmp_path: Path, db_url: str) -> None:
    folder = write_steps(
        tmp_path,
        {
            "odd_step.py": """
                config = {"name": "Odd", "type": "api", "path": "/odd", "method": "GET",
                          "rate_limit": "lots per day"}
                async def handler(req, ctx):
                    return {"status": 200, "body": {}}
            """
        },
    )
    with pytest.raises(StepConfigError) as caught:
        create_app(make_settings(db_url, steps_dir=folder))
    message = str(caught.value)
    assert "odd_step.py: config.rate_limit: 'lots per day' is not a rate limit" in message


async def test_limits_can_be_switched_off(db_url: str) -> None:
    async with running_app(make_settings(db_url, rate_limit_enabled=False)) as client:
        _, headers = await sign_up(client, "free@example.com")
        responses = [await client.get("/api/limited", headers=headers) for _ in range(3)]
    assert all(r.status_code == 200 and "x-ratelimit-limit" not in r.headers for r in responses)


async def test_two_app_instances_share_one_limit(any_db_url: str) -> None:
    """Two processes' worth of apps on one database: 120 requests at once, 100 get through.

    Small pools: the requests queue for connections, and a Postgres shared with other work
    is not asked for more connections than it may have free."""
    settings = admin_settings(any_db_url, db_pool_size=3)
    async with running_app(settings, role="api") as one, running_app(settings, role="api") as two:
        headers = await sign_in_admin(one)
        requests = [
            (one if i % 2 else two).get("/api/limited", headers=headers) for i in range(120)
        ]
        responses = await asyncio.gather(*requests)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 100, statuses
    assert statuses.count(429) == 20
    remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in responses)
    assert remaining[20:] == list(range(100))  # every count was handed out exactly once


# -- who the client is ----------------------------------------------------------------------------


async def _login_attempts(client: httpx.AsyncClient, forwarded_for: str, n: int) -> list[int]:
    """Failed logins from one address, each for another account (failures per account have a
    limit of their own: docs/auth.md)."""
    statuses = []
    for _ in range(n):
        response = await client.post(
            "/auth/login",
            json={"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "whatever1"},
            headers={"X-Forwarded-For": forwarded_for},
        )
        statuses.append(response.status_code)
    return statuses


async def test_anonymous_clients_are_told_apart_by_address_behind_a_trusted_proxy(
    db_url: str,
) -> None:
    # The test transport's peer is 127.0.0.1: here it is our proxy.
    settings = make_settings(db_url, trusted_proxies="127.0.0.1,10.0.0.0/8")
    async with running_app(settings, clock=ManualClock(T0)) as client:
        first = await _login_attempts(client, "203.0.113.7", 21)
        # A client that writes its own X-Forwarded-For is still known by what our proxy saw.
        spoofed = await _login_attempts(client, "198.51.100.1, 203.0.113.7", 1)
        # Two proxies of ours in a row: the client is the address before them.
        chained = await _login_attempts(client, "203.0.113.7, 10.1.2.3", 1)
        another = await _login_attempts(client, "203.0.113.8", 1)
    assert first == [401] * 20 + [429]
    assert spoofed == chained == [429]
    assert another == [401]


async def test_x_forwarded_for_is_ignored_when_no_proxy_is_trusted(db_url: str) -> None:
    async with running_app(make_settings(db_url), clock=ManualClock(T0)) as client:
        statuses = [(await _login_attempts(client, f"203.0.113.{i}", 1))[0] for i in range(21)]
    assert statuses == [401] * 20 + [429]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("192.0.2.1", ["203.0.113.7"], "192.0.2.1"),  # the peer is no proxy of ours
        ("10.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("10.0.0.1", ["1.1.1.1, 203.0.113.7"], "203.0.113.7"),
        ("10.0.0.1", ["203.0.113.7, 10.0.0.9"], "203.0.113.7"),
        ("10.0.0.1", ["203.0.113.7", "10.0.0.9"], "203.0.113.7"),  # two header lines
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["10.0.0.2, 10.0.0.3"], "10.0.0.2"),  # all ours: the farthest
        ("10.0.0.1", ["garbage, 10.0.0.3"], "10.0.0.3"),
        ("10.0.0.1", ["2001:db8::1"], "2001:db8::1"),
        ("fd00::1", ["203.0.113.7"], "203.0.113.7"),
        ("not-an-ip", ["203.0.113.7"], "not-an-ip"),
        (None, ["203.0.113.7"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    trusted = parse_networks(["10.0.0.0/8", "fd00::/8"])
    assert client_address(peer, forwarded, trusted) == expected


def test_trusted_proxies_must_be_addresses_or_networks(db_url: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not an IP address or network"):
        make_settings(db_url, trusted_proxies="10.0.0.0/8,proxy.local")
    settings = make_settings(db_url, trusted_proxies="10.0.0.0/8, ::1")
    assert [ipaddress.ip_network(n) for n in settings.trusted_proxies]


# -- the storage ----------------------------------------------------------------------------------


async def test_the_storage_works_with_the_limits_librarys_own_strategy(any_db_url: str) -> None:
    clock = ManualClock(T0)
    engine = create_engine(any_db_url)
    storage = StateStorage(engine, clock.now)
    limiter = FixedWindowRateLimiter(storage)
    item = limits.parse("3/minute")
    try:
        assert await storage.check()
        assert [await limiter.hit(item, "client") for _ in range(4)] == [True, True, True, False]
        stats = await limiter.get_window_stats(item, "client")
        assert (stats.reset_time, stats.remaining) == (T0 + 60, 0)
        assert not await limiter.test(item, "client")
        assert await limiter.hit(item, "another")
        await limiter.clear(item, "client")
        assert await limiter.hit(item, "client")
        clock.advance(61)
        assert await storage.get(item.key_for("another")) == 0
        assert await storage.purge(idle_seconds=60) == 2
        assert await storage.reset() == 0
    finally:
        await engine.dispose()


async def test_ended_windows_are_purged_from_the_state_table(db_url: str) -> None:
    clock = ManualClock(T0)

    async def windows() -> int:
        engine = create_engine(db_url)
        async with engine.connect() as conn:
            count = (
                await conn.execute(
                    text("SELECT count(*) FROM stepwise_state WHERE group_id = 'ratelimit'")
                )
            ).scalar_one()
        await engine.dispose()
        return int(count)

    async with running_app(admin_settings(db_url), clock=clock) as client:
        headers = bearer(await login(client, "root@example.com", "admin-password-123"))
        await client.get("/api/limited", headers=headers)
        assert await windows() == 2  # the admin's login and /api/limited
        clock.advance(120)
        await client.get("/api/limited", headers=headers)
    assert await windows() == 1
