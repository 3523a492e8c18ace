"""Alerts and pause on outage: incidents, their notices' deliveries, alert settings, integration pauses.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "incident",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("open_key", sa.String(length=240), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        _ts("opened_at"),
        _ts("last_seen_at"),
        _ts("resolved_at", nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", _json(), nullable=True),
        sa.ForeignKeyConstraint(["integration_id"], ["integration.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index("ix_incident_opened", "incident", ["opened_at"])
    op.create_index("ix_incident_status_opened", "incident", ["status", "opened_at"])
    op.create_index("ix_incident_integration_opened", "incident", ["integration_id", "opened_at"])
    op.create_table(
        "alertdelivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("at", nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incident.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alertdelivery_incident_id", "alertdelivery", ["incident_id"])
    op.create_index("ix_alertdelivery_status", "alertdelivery", ["status", "id"])
    op.create_table(
        "alertsettings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("smtp_host", sa.String(length=255), nullable=False),
        sa.Column("smtp_port", sa.Integer(), nullable=False),
        sa.Column("smtp_user", sa.String(length=255), nullable=False),
        sa.Column("smtp_from", sa.String(length=255), nullable=False),
        sa.Column("smtp_to", _json(), nullable=True),
        sa.Column("smtp_starttls", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.String(length=1000), nullable=False),
        sa.Column("check_seconds", sa.Float(), nullable=False),
        sa.Column("dead_window_minutes", sa.Float(), nullable=False),
        sa.Column("error_rate_threshold", sa.Float(), nullable=False),
        sa.Column("error_rate_window_minutes", sa.Float(), nullable=False),
        sa.Column("error_rate_min_records", sa.Integer(), nullable=False),
        sa.Column("quiet_minutes", _json(), nullable=True),
        sa.Column("outage_failures", sa.Integer(), nullable=False),
        sa.Column("outage_window_minutes", sa.Float(), nullable=False),
        sa.Column("reping_seconds", sa.Float(), nullable=False),
        sa.Column("smtp_password_encrypted", sa.Text(), nullable=False),
        sa.Column("webhook_secret_encrypted", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "integrationpause",
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        _ts("since", nullable=True),
        sa.Column("systems", _json(), nullable=True),
        _ts("next_ping_at", nullable=True),
        _ts("last_ping_at", nullable=True),
        sa.Column("last_ping_error", sa.Text(), nullable=True),
        _ts("resumed_at", nullable=True),
        sa.Column("resumed_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["integration_id"], ["integration.id"]),
        sa.PrimaryKeyConstraint("integration_id"),
    )


def downgrade() -> None:
    op.drop_table("integrationpause")
    op.drop_table("alertsettings")
    op.drop_index("ix_alertdelivery_status", table_name="alertdelivery")
    op.drop_index("ix_alertdelivery_incident_id", table_name="alertdelivery")
    op.drop_table("alertdelivery")
    for name in (
        "ix_incident_integration_opened",
        "ix_incident_status_opened",
        "ix_incident_opened",
    ):
        op.drop_index(name, table_name="incident")
    op.drop_table("incident")
