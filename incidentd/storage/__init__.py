"""Durable state behind one repository interface: SQLite (embedded default) or PostgreSQL (replicas).

SQLAlchemy 2 Core tables (``tables``), Alembic migrations (``migrations/``, ``incidentd db upgrade``),
the repository (``repository``) with the methods the service calls.
"""
from incidentd.storage.repository import (
    ConcurrentUpdate,
    DuplicateAction,
    NotificationOutcome,
    PruneReport,
    Repository,
    SchemaOutdated,
    database_url,
)

__all__ = ["ConcurrentUpdate", "DuplicateAction", "NotificationOutcome", "PruneReport", "Repository", "SchemaOutdated",
           "database_url"]
