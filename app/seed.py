"""Seed data: each `steps/<feature>/seed.py` may define `seed(connection) -> int`, which inserts
the rows it needs that are missing and says how many. Re-runnable. `python -m app seed` runs
them all; the tests run them after emptying the tables. Like app/models.py, this finds features
by folder, never by name: the dependency stays steps -> app.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import create_engine

from app.runtime._db import sync_url

STEPS_DIR = Path(__file__).resolve().parent.parent / "steps"


def seed_sync(database_url: str, steps_dir: Path = STEPS_DIR) -> dict[str, int]:
    """Run every feature's seed in one transaction; returns rows inserted per feature."""
    root = steps_dir.resolve()
    seeds = []
    for path in sorted(root.glob("*/seed.py")):
        module = importlib.import_module(f"{root.name}.{path.parent.name}.seed")
        seeds.append((path.parent.name, module.seed))
    inserted: dict[str, int] = {}
    if not seeds:
        return inserted
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            for feature, seed in seeds:
                inserted[feature] = int(seed(conn) or 0)
    finally:
        engine.dispose()
    return inserted
