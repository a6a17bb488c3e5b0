"""What the benchmarks share: a free loopback port, waiting for a server, stopping processes,
one figure format."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterable

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


def line(
    backend: str, how: str, rate: float, p50: float, p99: float, n: int, at: str = "half load"
) -> str:
    """One line format for every throughput figure the event benchmarks print."""
    return (
        f"{backend:<9} {how:<22} {rate:>8,.0f} events/s   latency p50 {p50:6.2f} ms  "
        f"p99 {p99:7.2f} ms  ({n} events at {at})"
    )
