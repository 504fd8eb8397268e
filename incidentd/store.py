"""The service's durable state: the SQLAlchemy repository (SQLite by default, PostgreSQL for replicas).

``Store`` is the name the service's modules use; the implementation, its tables and migrations live in
:mod:`incidentd.storage`. Failures surface as :class:`incidentd.errors.StorageError`, a missing row as
:class:`incidentd.errors.NotFound`.
"""
from __future__ import annotations

from incidentd.storage.repository import DuplicateAction, NotificationOutcome
from incidentd.storage.repository import Repository as Store

__all__ = ["DuplicateAction", "NotificationOutcome", "Store"]
