"""deliveries: runs cut short by their worker's death, counted apart from attempts

Revision ID: 0005_interruptions
Revises: 0004_samples
Create Date: 2026-12-04 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_interruptions"
down_revision = "0004_samples"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stepwise_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("interruptions", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("stepwise_deliveries", schema=None) as batch_op:
        batch_op.drop_column("interruptions")
