"""What the benchmarks share: a free loopback port, waiting for a server, stopping processes,
the latency runs' steady stream of events, one figure format."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_up(url: str, *, timeout: float, below: int = 500) -> None:
    """Poll `url` until it answers with a status under `below`; exit the benchmark after
    `timeout` seconds without one."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code < below:
                    return
            await asyncio.sleep(0.05)
    raise SystemExit(f"server at {url} never answered")


def stop(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every process still running, then wait for each; kill one that outlives
    `timeout` seconds."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def latency_figures(
    values: list[float], achieved: float, asked: float = 0.0
) -> tuple[float, float, str]:
    """A latency run's p50 and p99 of `values`, and its description: its events, the load asked
    for (0: half load) and the rate achieved."""
    values = sorted(values)
    p50, p99 = statistics.median(values), values[int(len(values) * 0.99) - 1]
    at = f"{asked:,.0f}/s" if asked else "half load"
    return p50, p99, f"{len(values)} events at {at}, {achieved:,.0f}/s"


def line(backend: str, how: str, rate: float, p50: float, p99: float, run: str) -> str:
    """One line format for every throughput figure the event benchmarks print."""
    return (
        f"{backend:<9} {how:<22} {rate:>8,.0f} events/s   latency p50 {p50:6.2f} ms  "
        f"p99 {p99:7.2f} ms  ({run})"
    )


async def steady_stream(
    rate: float, seconds: float, send: Callable[[int], Awaitable[None]], tick: float = 0.0
) -> tuple[int, float]:
    """Send `rate` events a second for `seconds` as a steady stream: event i is due `i / rate`
    seconds after the start, and each `send(n)` call takes the n events that came due while the
    previous call ran (as an API under load groups what arrives during a commit). `send` stamps
    its events when it is called: the figure is emit -> handler start. `tick` is the least time
    between two calls (0.01 sends the events of 10 ms as one burst, whose median event then waits
    for half the burst to be handled whatever the speed). Returns the events sent and the rate
    achieved (below `rate` when the producer cannot keep up)."""
    total = max(1, round(rate * seconds))
    sent = 0
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            await send(due - sent)
            sent = due
        next_at = max(start + sent / rate, time.perf_counter() + tick)
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return sent, sent / (time.perf_counter() - start)
