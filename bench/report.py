"""One line format for every throughput figure the event benchmarks print."""

from __future__ import annotations


def line(backend: str, how: str, rate: float, p50: float, p99: float, n: int) -> str:
    return (
        f"{backend:<9} {how:<22} {rate:>8,.0f} events/s   latency p50 {p50:6.2f} ms  "
        f"p99 {p99:7.2f} ms  ({n} events at half load)"
    )
