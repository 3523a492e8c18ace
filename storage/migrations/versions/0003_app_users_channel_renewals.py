"""App users (sign-in) and the Zoho channel renewal history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "appuser",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "channelrenewal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channel.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("channelrenewal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channelrenewal_channel_id"), ["channel_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_channelrenewal_at"), ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("channelrenewal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channelrenewal_at"))
        batch_op.drop_index(batch_op.f("ix_channelrenewal_channel_id"))
    op.drop_table("channelrenewal")
    op.drop_table("appuser")
