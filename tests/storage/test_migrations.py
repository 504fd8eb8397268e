"""Migrations build exactly the schema the code queries, on both backends; an old schema is refused."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from incidentd.storage import Repository, SchemaOutdated
from incidentd.storage.tables import metadata
from tests.postgres import PostgresServer


def test_migrated_schema_matches_the_tables(repo: Repository) -> None:
    with repo.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_a_postgresql_database_that_was_not_upgraded_is_refused(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    with pytest.raises(SchemaOutdated, match="incidentd db upgrade"):
        Repository(url)
    Repository(url, migrate_schema=True).close()
    Repository(url).close()
