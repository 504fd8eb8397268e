"""`incidentd db upgrade` brings a fresh database to the newest revision; `db current` says where it is."""
from __future__ import annotations

from typer.testing import CliRunner

from incidentd.cli import build_app
from incidentd.storage import Repository
from incidentd.storage.migrate import head
from tests.postgres import PostgresServer


def test_upgrade_then_current_on_postgresql(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    runner = CliRunner()
    before = runner.invoke(build_app(), ["db", "current", "--database", url])
    assert before.exit_code == 1 and "at none" in before.output
    up = runner.invoke(build_app(), ["db", "upgrade", "--database", url])
    assert up.exit_code == 0, up.output
    assert f"at revision {head()}" in up.output
    again = runner.invoke(build_app(), ["db", "upgrade", "--database", url])    # idempotent
    assert again.exit_code == 0
    assert runner.invoke(build_app(), ["db", "current", "--database", url]).exit_code == 0
    Repository(url).close()                                                      # opens without migrating


def test_upgrade_of_an_unreachable_database_is_a_clear_error() -> None:
    res = CliRunner().invoke(build_app(), ["db", "upgrade", "--database",
                                           "postgresql+psycopg://nobody@127.0.0.1:1/none"])
    assert res.exit_code == 2
    assert "cannot open the database" in res.output
