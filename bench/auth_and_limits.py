"""Benchmarks of the platform layer: what a login and a rate-limit check cost.

    .venv/bin/python bench/auth_and_limits.py [--database-url URL] [--n 500]

Prints figures and ratios against baselines measured in the same run, on the same database:
- a rate-limit hit (one upsert on stepwise_state) against a `SELECT 1` round trip;
- a login with an unknown email against one with a wrong password (argon2 at the configured
  cost): the ratio should be close to 1, or an unknown email answers faster and can be told.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import limits
from sqlalchemy import text

from app.db import migrate
from app.middleware.ratelimit import RateLimiter, StateStorage
from app.runtime._db import create_engine
from app.security import Passwords


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.3f} ms, p99 {_p99(values) * 1000:.3f} ms"


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def bench_rate_limit(url: str, n: int) -> None:
    engine = create_engine(url)
    limiter = RateLimiter(StateStorage(engine))
    item = limits.parse(f"{n * 10}/minute")
    baseline, hits = [], []
    for i in range(n):
        t0 = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
        baseline.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await limiter.hit(item, "bench", f"client-{i % 50}")
        hits.append(time.perf_counter() - t0)
    await engine.dispose()
    print(f"SELECT 1 in a transaction (baseline): {_ms(baseline)}")
    print(f"rate-limit hit:                       {_ms(hits)}")
    ratio = statistics.median(hits) / statistics.median(baseline)
    print(f"ratio hit / baseline: {ratio:.2f}")


async def bench_login_timing(n: int) -> None:
    passwords = Passwords(time_cost=3, memory_cost=65_536, parallelism=4)
    stored = await passwords.hash("the right password")
    await passwords.verify("warm-up", None)  # makes the dummy hash
    known, unknown = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        await passwords.verify("a wrong password", stored)
        known.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await passwords.verify("a wrong password", None)
        unknown.append(time.perf_counter() - t0)
    print(f"wrong password (argon2id t=3 m=64MiB p=4): {_ms(known)}")
    print(f"unknown email (dummy hash):                {_ms(unknown)}")
    print(f"ratio unknown / known: {statistics.median(unknown) / statistics.median(known):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        print(f"== rate limiting on {url.split(':')[0]} ({args.n} hits)")
        asyncio.run(bench_rate_limit(url, args.n))
    print("== login timing (20 of each)")
    asyncio.run(bench_login_timing(20))


if __name__ == "__main__":
    main()
