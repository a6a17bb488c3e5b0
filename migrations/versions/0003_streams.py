"""streams: group versions, tombstones and the NOTIFY spill

Revision ID: 0003_streams
Revises: 0002_users
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_streams"
down_revision = "0002_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stepwise_stream_items", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(
            "ix_stepwise_stream_items_version", ["stream", "group_id", "version"], unique=False
        )
    op.create_table(
        "stepwise_stream_groups",
        sa.Column("stream", sa.String(length=100), nullable=False),
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("pruned_version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "group_id", name=op.f("pk_stepwise_stream_groups")),
    )
    op.create_table(
        "stepwise_stream_spill",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stepwise_stream_spill")),
    )


def downgrade() -> None:
    op.drop_table("stepwise_stream_spill")
    op.drop_table("stepwise_stream_groups")
    with op.batch_alter_table("stepwise_stream_items", schema=None) as batch_op:
        batch_op.drop_index("ix_stepwise_stream_items_version")
        batch_op.drop_column("deleted")
