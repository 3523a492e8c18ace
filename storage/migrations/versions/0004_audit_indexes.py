"""Audit page indexes: each low-cardinality filter followed by (started_at, id), and replays by original.

The single-column indexes on outcome, integration_id and source_id become prefixes of the new ones and are
dropped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COMPOSITES = {
    "ix_audit_outcome_started": ["outcome", "started_at", "id"],
    "ix_audit_flow_started": ["flow", "started_at", "id"],
    "ix_audit_integration_started": ["integration_id", "started_at", "id"],
    "ix_audit_error_class_started": ["error_class", "started_at", "id"],
    "ix_audit_source_started": ["source_id", "started_at", "id"],
}
REPLACED = {  # single-column indexes that are now prefixes of the composite ones
    "ix_auditrecord_outcome": ["outcome"],
    "ix_auditrecord_integration_id": ["integration_id"],
    "ix_auditrecord_source_id": ["source_id"],
}


def upgrade() -> None:
    # Plain CREATE INDEX, not batch mode: SQLite adds an index without rebuilding the table, which
    # matters on a database already holding millions of audit records.
    for name, columns in COMPOSITES.items():
        op.create_index(name, "auditrecord", columns, unique=False)
    op.create_index("ix_audit_replay_of", "auditrecord", ["replay_of"], unique=False)
    for name in REPLACED:
        op.drop_index(name, table_name="auditrecord")


def downgrade() -> None:
    for name, columns in REPLACED.items():
        op.create_index(name, "auditrecord", columns, unique=False)
    op.drop_index("ix_audit_replay_of", table_name="auditrecord")
    for name in reversed(COMPOSITES):
        op.drop_index(name, table_name="auditrecord")
