"""users: the accounts of auth and the users API

Revision ID: 0002_users
Revises: 0001_runtime
Create Date: 2026-11-25 12:10:30.693565
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_users"
down_revision = "0001_runtime"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        # Stored lower-cased: the unique constraint is case-insensitive in effect.
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        # Null for a user created through POST /users: no password, cannot log in.
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('user', 'admin')", name=op.f("ck_users_role_known")),
        sa.CheckConstraint("age IS NULL OR age >= 18", name=op.f("ck_users_age_adult")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )


def downgrade() -> None:
    op.drop_table("users")
