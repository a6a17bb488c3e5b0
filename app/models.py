"""Every table the migrations manage: the runtime's and each feature's (for Alembic)."""

from __future__ import annotations

from sqlalchemy import MetaData

from app.runtime._schema import metadata as runtime_metadata

# Features add their tables to `app.runtime._schema.metadata` via app.modelbase, so one
# MetaData covers everything; importing the feature model modules registers them.
target_metadata: MetaData = runtime_metadata
