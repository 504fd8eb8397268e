"""`incidentd db`: the state database's schema (Alembic migrations, SQLite and PostgreSQL)."""
from __future__ import annotations

from pathlib import Path

import typer

db_app = typer.Typer(no_args_is_help=True, help="The state database: schema migrations.")


def _target(config: Path | None, database: str | None) -> str:
    from incidentd.config import Settings

    if database:
        return database
    settings = Settings.load(config)
    return settings.database_url or str(settings.database)


@db_app.command("upgrade")
def upgrade(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML settings file."),
    database: str | None = typer.Option(None, "--database", help="Database URL or SQLite file (default: "
                                                                   "from the settings)."),
) -> None:
    """Migrate the database to the newest schema revision (idempotent; run before starting replicas)."""
    from incidentd.errors import ConfigError, StorageError
    from incidentd.storage import Repository

    try:
        repo = Repository(_target(config, database), migrate_schema=True)
    except (ConfigError, StorageError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    from incidentd.storage import migrate

    with repo.engine.connect() as conn:
        typer.echo(f"{repo.engine.url.render_as_string(hide_password=True)}: at revision {migrate.current(conn)}")
    repo.close()


@db_app.command("current")
def current(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML settings file."),
    database: str | None = typer.Option(None, "--database", help="Database URL or SQLite file."),
) -> None:
    """Print the schema revision the database is at and the one this incidentd needs."""
    from sqlalchemy.exc import SQLAlchemyError

    from incidentd.storage import migrate
    from incidentd.storage.repository import database_url, make_engine

    engine = make_engine(database_url(_target(config, database)))
    try:
        with engine.connect() as conn:
            at = migrate.current(conn)
    except SQLAlchemyError as e:
        typer.echo(f"error: {e.__class__.__name__}: {str(e).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(f"at {at or 'none'}, needs {migrate.head()}")
    if at != migrate.head():
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
