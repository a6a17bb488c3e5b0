"""deliveries: one index in the claim's exact order; fewer indexes to write

A claim reads the due pending deliveries ordered by (available_at, id) through
ix_stepwise_deliveries_queue and stops at its limit. The indexes it replaces let the planners
sort the whole backlog on every claim (with stale statistics on Postgres, always on SQLite),
and cost a write on every insert, claim and ack. Acks, renewals and give-backs find their
rows by lease token (ix_stepwise_deliveries_lease), not by scanning the running ones.

Revision ID: 0006_queue_index
Revises: 0005_interruptions
Create Date: 2026-12-04 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_queue_index"
down_revision = "0005_interruptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stepwise_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_stepwise_deliveries_status_available")
        batch_op.drop_index("ix_stepwise_deliveries_step_status")
        batch_op.drop_index("ix_stepwise_deliveries_unfinished")
        batch_op.drop_index("ix_stepwise_deliveries_group")
        batch_op.create_index(
            "ix_stepwise_deliveries_queue", ["status", "available_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_stepwise_deliveries_group",
            ["step", "message_group_id", "id"],
            unique=False,
            sqlite_where=sa.text("message_group_id IS NOT NULL"),
            postgresql_where=sa.text("message_group_id IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_stepwise_deliveries_lease",
            ["lease_token"],
            unique=False,
            sqlite_where=sa.text("lease_token IS NOT NULL"),
            postgresql_where=sa.text("lease_token IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("stepwise_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_stepwise_deliveries_lease")
        batch_op.drop_index("ix_stepwise_deliveries_group")
        batch_op.drop_index("ix_stepwise_deliveries_queue")
        batch_op.create_index(
            "ix_stepwise_deliveries_group", ["step", "message_group_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_stepwise_deliveries_unfinished",
            ["id"],
            unique=False,
            sqlite_where=sa.text("status IN ('pending', 'running')"),
            postgresql_where=sa.text("status IN ('pending', 'running')"),
        )
        batch_op.create_index(
            "ix_stepwise_deliveries_step_status", ["step", "status"], unique=False
        )
        batch_op.create_index(
            "ix_stepwise_deliveries_status_available", ["status", "available_at"], unique=False
        )
