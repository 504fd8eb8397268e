"""Every storage test runs against both backends: a SQLite file and a real PostgreSQL (tests/postgres.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from incidentd.storage import Repository
from tests.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "incidentd.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.create_database()
    Repository(url, migrate_schema=True).close()     # what `incidentd db upgrade` does
    return url


@pytest.fixture()
def repo(db_url: str) -> Iterator[Repository]:
    r = Repository(db_url)
    yield r
    r.close()
