"""Initial schema: incidents, timeline, evidence, actions, alert dedup, kv, replicas and model leases.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("dedup_key", sa.String(512), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float, nullable=True),
        sa.Column("row_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("doc", sa.Text, nullable=False),
    )
    op.create_index("ix_incidents_dedup_status", "incidents", ["dedup_key", "status"])
    op.create_index("ix_incidents_model_status", "incidents", ["model", "status"])
    op.create_index("ix_incidents_status_resolved", "incidents", ["status", "resolved_at"])
    op.create_index("ux_incidents_active_key", "incidents", ["dedup_key"], unique=True,
                    sqlite_where=sa.text("status != 'resolved'"), postgresql_where=sa.text("status != 'resolved'"))
    op.create_table(
        "timeline",
        sa.Column("incident_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "evidence",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("doc", sa.Text, nullable=False),
    )
    op.create_index("ix_evidence_model_kind_at", "evidence", ["model", "kind", "at"])
    op.create_index("ix_evidence_kind_ended", "evidence", ["kind", "ended_at"])
    op.create_table(
        "actions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("doc", sa.Text, nullable=False),
    )
    op.create_index("ix_actions_incident", "actions", ["incident_id"])
    op.create_index("ix_actions_model_status", "actions", ["model", "status"])
    op.create_table(
        "alert_notifications",
        sa.Column("fingerprint", sa.String(128), primary_key=True),
        sa.Column("starts_at", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("evidence_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_alert_notifications_received", "alert_notifications", ["received_at"])
    op.create_table(
        "kv",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
    )
    op.create_table(
        "model_leases",
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("ix_model_leases_owner", "model_leases", ["owner"])


def downgrade() -> None:
    for name in ("model_leases", "replicas", "kv", "alert_notifications", "actions", "evidence", "timeline",
                 "incidents"):
        op.drop_table(name)
