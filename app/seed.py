"""Data the migrations seed (the sample catalogue); re-runnable, used by tests after a reset."""

from __future__ import annotations


def seed_sync(database_url: str) -> None:
    """Insert the seed rows that are missing. Features register their seeds here."""
    return None
