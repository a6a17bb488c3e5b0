"""Per-step rate limits (`"rate_limit": "100/minute"` in an API step's config), per client.

Built on the `limits` library (its limit strings, keys and storage interface) with a storage of
our own in the runtime's state table (`stepwise_state`, group `ratelimit`), so every process on
one Postgres shares the same counters. Fixed windows: a client's window opens with its first
request and allows `amount` requests until it ends. Each request costs one SQL statement.

The client is the signed-in user, else the peer address; `X-Forwarded-For` is believed only when
the peer is one of `TRUSTED_PROXIES`.

Failed sign-ins are also limited per account, whatever the address (`FailedLoginLimiter`,
`login_attempt`): a password guesser spread over many addresses gets no more guesses.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import limits
from limits import RateLimitItem
from limits.aio.storage import Storage
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from app.runtime import ApiStepConfig, AppError, Context, Runtime, Step, StepConfigError
from app.runtime._json import dumps, loads

GROUP = "ratelimit"
_MAX_KEY = 255
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One statement: open a window, or count a hit in the open one; returns the stored value.
_HIT = {
    "postgresql": """
        INSERT INTO stepwise_state (group_id, key, value, updated_at)
        VALUES (:g, :k, :fresh, :now)
        ON CONFLICT (group_id, key) DO UPDATE SET
          value = CASE
            WHEN (stepwise_state.value::jsonb ->> 'reset')::float8 > :now
            THEN jsonb_build_object(
                   'hits', (stepwise_state.value::jsonb ->> 'hits')::bigint + :amount,
                   'reset', (stepwise_state.value::jsonb ->> 'reset')::float8)::text
            ELSE excluded.value END,
          updated_at = excluded.updated_at
        RETURNING value
    """,
    "sqlite": """
        INSERT INTO stepwise_state (group_id, key, value, updated_at)
        VALUES (:g, :k, :fresh, :now)
        ON CONFLICT (group_id, key) DO UPDATE SET
          value = CASE
            WHEN json_extract(stepwise_state.value, '$.reset') > :now
            THEN json_object(
                   'hits', json_extract(stepwise_state.value, '$.hits') + :amount,
                   'reset', json_extract(stepwise_state.value, '$.reset'))
            ELSE excluded.value END,
          updated_at = excluded.updated_at
        RETURNING value
    """,
}


class StateStorage(Storage):
    """A `limits` async storage in the runtime's state table: one row per key holding
    `{"hits": n, "reset": epoch seconds}`. Works with `limits.aio.strategies.FixedWindowRateLimiter`
    too; `acquire` is the one-statement path the middleware uses."""

    STORAGE_SCHEME = None

    def __init__(
        self, engine: AsyncEngine, now: Callable[[], float] = time.time, group: str = GROUP
    ) -> None:
        super().__init__(wrap_exceptions=False)
        self.engine = engine
        self.now = now
        self.group = group
        self._hit_sql = text(_HIT[engine.dialect.name])

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    async def acquire(self, key: str, expiry: int, amount: int = 1) -> tuple[int, float]:
        """Count `amount` hits on `key`: (hits in the current window, when it resets)."""
        now = self.now()
        fresh = dumps({"hits": amount, "reset": now + expiry})
        async with self.engine.begin() as conn:
            stored = (
                await conn.execute(
                    self._hit_sql,
                    {"g": self.group, "k": key, "fresh": fresh, "now": now, "amount": amount},
                )
            ).scalar_one()
        value = loads(stored)
        return int(value["hits"]), float(value["reset"])

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        hits, _reset = await self.acquire(key, expiry, amount)
        return hits

    async def _window(self, key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            stored = (
                await conn.execute(
                    text("SELECT value FROM stepwise_state WHERE group_id = :g AND key = :k"),
                    {"g": self.group, "k": key},
                )
            ).scalar_one_or_none()
        if stored is None:
            return None
        value: dict[str, Any] = loads(stored)
        return value if float(value["reset"]) > self.now() else None

    async def get(self, key: str) -> int:
        window = await self._window(key)
        return int(window["hits"]) if window else 0

    async def get_expiry(self, key: str) -> float:
        window = await self._window(key)
        return float(window["reset"]) if window else self.now()

    async def check(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    async def reset(self) -> int | None:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text("DELETE FROM stepwise_state WHERE group_id = :g"), {"g": self.group}
            )
        return int(result.rowcount)

    async def clear(self, key: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM stepwise_state WHERE group_id = :g AND key = :k"),
                {"g": self.group, "k": key},
            )

    async def purge(self, idle_seconds: float) -> int:
        """Delete the windows nobody hit for `idle_seconds` (they have all ended)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text("DELETE FROM stepwise_state WHERE group_id = :g AND updated_at < :before"),
                {"g": self.group, "before": self.now() - idle_seconds},
            )
        return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class LimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """Fixed-window limits over a StateStorage; also purges ended windows now and then."""

    def __init__(self, storage: StateStorage, purge_every: float = 60.0) -> None:
        self.storage = storage
        self.purge_every = purge_every
        self.longest_window = 60
        self._next_purge = 0.0

    async def hit(self, item: RateLimitItem, *identifiers: str) -> LimitResult:
        key = item.key_for(*identifiers)
        if len(key) > _MAX_KEY:
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        hits, reset_at = await self.storage.acquire(key, item.get_expiry())
        now = self.storage.now()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_every
            await self.storage.purge(self.longest_window)
        return LimitResult(
            allowed=hits <= item.amount,
            limit=item.amount,
            remaining=max(0, item.amount - hits),
            reset_at=reset_at,
            retry_after=max(1, math.ceil(reset_at - now)),
        )


# -- who is the client ---------------------------------------------------------------------------


def parse_networks(values: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: list[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in nets)


def client_address(peer: str | None, forwarded_for: list[str], trusted: list[IPNetwork]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the nearest
    address in `X-Forwarded-For` (read from the right) that is not a trusted proxy itself.
    Addresses to the left of that one are the client's own claims and are never believed."""
    if peer is None:
        return "unknown"
    current = _address(peer)
    if current is None or not trusted or not _trusted(current, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # a malformed entry: stop at the last proxy that is known to be ours
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)


def client_identity(req: Any, trusted: list[IPNetwork]) -> str:
    user = req.user
    if user is not None:
        user_id = user.get("id") if isinstance(user, dict) else getattr(user, "id", None)
        if user_id is not None:
            return f"user:{user_id}"
    raw = req.raw
    if raw is None:
        return "ip:unknown"
    peer = raw.client.host if raw.client is not None else None
    return "ip:" + client_address(peer, raw.headers.getlist("x-forwarded-for"), trusted)


# -- the API middleware --------------------------------------------------------------------------

ApiMiddleware = Callable[[Step, Any, Context, Callable[[], Awaitable[Any]]], Awaitable[Any]]


def step_limits(runtime: Runtime) -> dict[str, RateLimitItem]:
    """Each API step's parsed `rate_limit`; a string `limits` cannot read stops start-up."""
    found: dict[str, RateLimitItem] = {}
    problems: list[str] = []
    for step in runtime.registry.api_steps:
        config = step.config
        assert isinstance(config, ApiStepConfig)
        if config.rate_limit is None:
            continue
        try:
            found[step.name] = limits.parse(config.rate_limit)
        except ValueError:
            problems.append(
                f"{step.file}: config.rate_limit: {config.rate_limit!r} is not a rate limit "
                "(write it like '100/minute' or '10 per second')"
            )
    if problems:
        raise StepConfigError(problems)
    return found


def rate_limit_middleware(
    limiter: RateLimiter, by_step: dict[str, RateLimitItem], trusted: list[IPNetwork]
) -> ApiMiddleware:
    async def middleware(
        step: Step, req: Any, ctx: Context, call_next: Callable[[], Awaitable[Any]]
    ) -> Any:
        item = by_step.get(step.name)
        if item is None:
            return await call_next()
        result = await limiter.hit(item, step.name, client_identity(req, trusted))
        headers = result.headers()
        if not result.allowed:
            ctx.logger.info("rate limited", limit=str(item), retry_after=result.retry_after)
            raise AppError(
                "rate_limited",
                429,
                "error.rate_limited_retry",
                headers=headers,
                retry_after=result.retry_after,
            )
        try:
            reply = await call_next()
        except AppError as exc:
            exc.headers = {**headers, **exc.headers}
            raise
        return _with_headers(reply, headers)

    return middleware


def _with_headers(reply: Any, headers: dict[str, str]) -> Any:
    if isinstance(reply, Response):
        reply.headers.update(headers)
        return reply
    if reply is None:
        return {"status": 204, "body": None, "headers": headers}
    if isinstance(reply, dict):
        return {**reply, "headers": {**(reply.get("headers") or {}), **headers}}
    return reply


def install_rate_limits(runtime: Runtime, trusted_proxies: Sequence[str]) -> RateLimiter | None:
    """Wrap every API step that declares `rate_limit`; None when no step does."""
    by_step = step_limits(runtime)
    if not by_step:
        return None
    limiter = RateLimiter(StateStorage(runtime.engine, runtime.clock.now))
    limiter.longest_window = max(item.get_expiry() for item in by_step.values())
    runtime.add_api_middleware(
        rate_limit_middleware(limiter, by_step, parse_networks(trusted_proxies))
    )
    return limiter


# -- failed sign-ins per account -----------------------------------------------------------------

LOGIN_GROUP = "login_failures"


class FailedLoginLimiter:
    """At most `max_failures` failed sign-ins per account in `window_seconds`, counted in the
    state table like every limit: across every address and every instance.

    An attempt is counted when it starts, so that a burst of parallel guesses cannot all pass the
    check before the first failure is written, and forgotten when it succeeds: what stays counted
    are the failures. Over the limit an attempt is refused with 429 before the password is
    checked, the right password too (else the answer would tell that a guess was right). Unknown
    emails are counted alike, so a 429 does not tell whether an account exists. Accounts are
    stored as SHA-256 digests: the table holds no email address.
    """

    def __init__(self, storage: StateStorage, *, max_failures: int, window_seconds: int) -> None:
        self.limiter = RateLimiter(storage)
        self.limiter.longest_window = window_seconds
        self.item = limits.RateLimitItemPerSecond(max_failures, window_seconds)

    @contextlib.asynccontextmanager
    async def attempt(self, account: str) -> AsyncIterator[None]:
        """Wrap one credential check: 429 when the account has failed too often; the check
        raising counts as a failure, returning clears the account's count."""
        digest = hashlib.sha256(account.encode()).hexdigest()
        result = await self.limiter.hit(self.item, "account", digest)
        if not result.allowed:
            raise AppError(
                "rate_limited",
                429,
                "error.too_many_failed_logins",
                headers=result.headers(),
                retry_after=result.retry_after,
            )
        yield
        await self.limiter.storage.clear(self.item.key_for("account", digest))


def install_login_limit(
    app: Any, runtime: Runtime, *, max_failures: int, window_seconds: int
) -> None:
    """Give the app a FailedLoginLimiter (`app.state.login_limiter`) for `login_attempt`."""
    storage = StateStorage(runtime.engine, runtime.clock.now, group=LOGIN_GROUP)
    app.state.login_limiter = FailedLoginLimiter(
        storage, max_failures=max_failures, window_seconds=window_seconds
    )


def login_attempt(req: Any, account: str) -> contextlib.AbstractAsyncContextManager[None]:
    """`async with login_attempt(req, email):` around a credential check, in a step: the app's
    FailedLoginLimiter, or nothing when rate limits are off (or the request is not HTTP)."""
    app = getattr(req.raw, "app", None)
    limiter = getattr(getattr(app, "state", None), "login_limiter", None)
    if limiter is None:
        return contextlib.nullcontext()
    assert isinstance(limiter, FailedLoginLimiter)
    return limiter.attempt(account)
