"""deliveries: the cron firings' dedupe key indexed only where it is set

Only cron firings carry a dedupe key; every other delivery's NULL still took an entry in the
unique constraint's index, written on every emit (~0.07 ms of a 52-event emit's INSERTs, and
pages for its commit to sync). A partial unique index keeps the one guarantee that matters
(one firing per step and time) for the rows that have a key.

Revision ID: 0007_dedupe_partial
Revises: 0006_queue_index
Create Date: 2026-12-04 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_dedupe_partial"
down_revision = "0006_queue_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stepwise_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("uq_stepwise_deliveries_dedupe_key", type_="unique")
        batch_op.create_index(
            "uq_stepwise_deliveries_dedupe_key",
            ["dedupe_key"],
            unique=True,
            sqlite_where=sa.text("dedupe_key IS NOT NULL"),
            postgresql_where=sa.text("dedupe_key IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("stepwise_deliveries", schema=None) as batch_op:
        batch_op.drop_index("uq_stepwise_deliveries_dedupe_key")
        batch_op.create_unique_constraint("uq_stepwise_deliveries_dedupe_key", ["dedupe_key"])
