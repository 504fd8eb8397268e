"""Fixtures shared by the whole suite: one real PostgreSQL per session (tests/postgres.py)."""
from __future__ import annotations

from tests.postgres import pg_url, postgres

__all__ = ["pg_url", "postgres"]
