"""Every table the migrations manage: the runtime's and each feature's (for Alembic)."""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import MetaData

from app.db import Base


def load_feature_models(steps_dir: Path) -> MetaData:
    """Import each `steps/<feature>/models.py` so its tables join the shared MetaData.

    Only Alembic (migrations/env.py) and tests call this: the app itself never imports a
    feature by name, the dependency stays steps -> app.
    """
    root = steps_dir.resolve()
    for models in sorted(root.glob("*/models.py")):
        importlib.import_module(f"{root.name}.{models.parent.name}.models")
    return Base.metadata
