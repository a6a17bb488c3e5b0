"""The migrations build exactly the schema the code declares: a column added to a table but
forgotten in `migrations/versions/` (or the other way round) fails here, not in production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.models import load_feature_models
from app.runtime._db import sync_url
from app.settings import get_settings


def test_the_migrated_database_matches_the_models(any_db_url: str) -> None:
    metadata = load_feature_models(get_settings().steps_dir)
    engine = create_engine(sync_url(any_db_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": False}
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []
