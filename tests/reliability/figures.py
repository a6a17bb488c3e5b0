"""Figures the reliability tests measure (inputs tried, attacks refused...), printed at the end of
the test run by `tests/reliability/conftest.py`."""

from __future__ import annotations

from collections import Counter

FIGURES: Counter[str] = Counter()


def count(name: str, n: int = 1) -> None:
    """Add `n` to the figure `name` (a phrase: "fuzz cases sent", "auth attacks refused")."""
    FIGURES[name] += n
