"""Alembic environment: the runtime's tables plus every feature's models, one advisory lock."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from app.models import load_feature_models
from app.runtime._db import sync_url
from app.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or sync_url(
    get_settings().database_url
).render_as_string(hide_password=False)
target_metadata = load_feature_models(get_settings().steps_dir)
MIGRATION_LOCK = 74_201_311  # any fixed number: one migrator at a time on Postgres


def run_migrations_offline() -> None:
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        is_pg = connection.dialect.name == "postgresql"
        if is_pg:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if is_pg:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
