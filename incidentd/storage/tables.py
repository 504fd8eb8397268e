"""The schema, as SQLAlchemy Core tables: what the repository queries. Migrations create it (``migrations/``).

Every per-cycle query has an index: incidents by dedup key and status (one active incident per key is a
partial UNIQUE index, so two replicas cannot both open one), by model and status; evidence by model,
kind and time, and open alerts by kind where ``ended_at`` is null; actions by incident, by model and
status, and a UNIQUE idempotency key so the same action cannot be recorded (and run) twice.
"""
from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

incidents = Table(
    "incidents", metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("dedup_key", String(512), nullable=False),
    Column("status", String(32), nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("resolved_at", Float, nullable=True),
    Column("row_version", Integer, nullable=False, server_default="1"),
    Column("doc", Text, nullable=False),
    Index("ix_incidents_dedup_status", "dedup_key", "status"),
    Index("ix_incidents_model_status", "model", "status"),
    Index("ix_incidents_status_resolved", "status", "resolved_at"),
    Index("ux_incidents_active_key", "dedup_key", unique=True,
          sqlite_where=text("status != 'resolved'"), postgresql_where=text("status != 'resolved'")),
)

timeline = Table(
    "timeline", metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", Text, nullable=False),
)

evidence = Table(
    "evidence", metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("doc", Text, nullable=False),
    Index("ix_evidence_model_kind_at", "model", "kind", "at"),
    Index("ix_evidence_kind_ended", "kind", "ended_at"),
)

actions = Table(
    "actions", metadata,
    Column("id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False),
    Column("model", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("claimed_by", String(128), nullable=True),      # the replica that runs it; set once, atomically
    Column("doc", Text, nullable=False),
    Index("ix_actions_incident", "incident_id"),
    Index("ix_actions_model_status", "model", "status"),
)

alert_notifications = Table(
    "alert_notifications", metadata,
    Column("fingerprint", String(128), primary_key=True),
    Column("starts_at", String(64), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("evidence_id", String(64), nullable=True),
    Index("ix_alert_notifications_received", "received_at"),
)

kv = Table(
    "kv", metadata,
    Column("key", String(512), primary_key=True),
    Column("value", Text, nullable=False),
)

# Replicas and model ownership (several ``incidentd serve`` on one PostgreSQL).
replicas = Table(
    "replicas", metadata,
    Column("id", String(128), primary_key=True),
    Column("heartbeat_at", Float, nullable=False),
    Column("started_at", Float, nullable=False),
)

model_leases = Table(
    "model_leases", metadata,
    Column("model", String(255), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("epoch", Integer, nullable=False, server_default="1"),
    Index("ix_model_leases_owner", "owner"),
)


# API keys (incidentd/auth/keys.py): only a salted scrypt hash is kept; one active key per name.
api_keys = Table(
    "api_keys", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Index("ux_api_keys_active_name", "name", unique=True,
          sqlite_where=text("revoked_at IS NULL"), postgresql_where=text("revoked_at IS NULL")),
)
