"""Error triage: failure groups with what people decided about them, and payload edits before replay.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "triagegroup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("flow", sa.String(length=50), nullable=False),
        sa.Column("error_class", sa.String(length=20), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("assignee", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(["integration_id"], ["integration.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_triagegroup_integration_status", "triagegroup", ["integration_id", "status"])
    op.create_table(
        "payloadedit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_record_id", sa.Integer(), nullable=False),
        sa.Column("payload", _json(), nullable=True),
        sa.Column("diff", _json(), nullable=True),
        sa.Column("edited_by", sa.String(length=200), nullable=False),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["audit_record_id"], ["auditrecord.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_payloadedit_audit_record_id", "payloadedit", ["audit_record_id"])
    op.create_index("ix_payloadedit_job_id", "payloadedit", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_payloadedit_job_id", table_name="payloadedit")
    op.drop_index("ix_payloadedit_audit_record_id", table_name="payloadedit")
    op.drop_table("payloadedit")
    op.drop_index("ix_triagegroup_integration_status", table_name="triagegroup")
    op.drop_table("triagegroup")
