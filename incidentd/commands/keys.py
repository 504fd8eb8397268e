"""`incidentd keys create|list|revoke`: API keys in the service's database (docs/security.md)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys (stored hashed).")
ConfigOpt = typer.Option(None, "--config", "-c", help="The service's YAML settings file (names the database).")
DatabaseOpt = typer.Option(None, "--database", help="Database URL (postgresql+psycopg://…) or SQLite file, "
                           "overriding the settings.")


def _store(config: Path | None, database: str | None):  # type: ignore[no-untyped-def]
    """The service's own database: ``--database``, else the settings' ``database_url``, else its SQLite file
    (keys made anywhere else would never be seen by the service)."""
    from incidentd.config import Settings
    from incidentd.errors import ConfigError
    from incidentd.store import Store

    try:
        settings = Settings.load(config)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    return Store(database or settings.database_url or settings.database)


@keys_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Who or what holds the key (e.g. alertmanager, alice)."),
    scopes: str = typer.Option(..., "--scopes", help="Comma-separated: read,respond,approve,ingest,admin."),
    config: Path | None = ConfigOpt,
    database: str | None = DatabaseOpt,
    as_json: bool = typer.Option(False, "--json", help='Print {"name", "key", "scopes"} as JSON.'),
) -> None:
    """Create a key and print it once; only its scrypt hash is stored."""
    from incidentd.auth.keys import create_key
    from incidentd.auth.scopes import parse_scopes
    from incidentd.errors import Conflict

    try:
        wanted = parse_scopes(scopes)
    except ValueError as e:
        typer.echo(f"error: --scopes: {e}", err=True)
        raise typer.Exit(2) from None
    store = _store(config, database)
    try:
        issued = create_key(store, name, wanted)
    except (ValueError, Conflict) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    ordered = sorted(s.value for s in issued.scopes)
    if as_json:
        typer.echo(json.dumps({"name": issued.name, "key": issued.key, "scopes": ordered}))
    else:
        typer.echo(f"key {issued.name} ({','.join(ordered)}): {issued.key}")
        typer.echo("store it now: it is not shown again (send it as 'Authorization: Bearer <key>')", err=True)


@keys_app.command("list")
def list_(
    config: Path | None = ConfigOpt,
    database: str | None = DatabaseOpt,
    all_: bool = typer.Option(False, "--all", help="Include revoked keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List keys: name, id, scopes, when created (and revoked). Never the key itself."""
    from incidentd.auth.keys import list_keys

    store = _store(config, database)
    try:
        infos = list_keys(store, include_revoked=all_)
    finally:
        store.close()
    rows = [{"name": k.name, "id": k.id, "scopes": sorted(s.value for s in k.scopes), "created_at": k.created_at,
             "revoked_at": k.revoked_at} for k in infos]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for k in infos:
        state = "revoked" if k.revoked_at else "active"
        typer.echo(f"{k.name}\t{k.id}\t{','.join(sorted(s.value for s in k.scopes))}\t{state}")


@keys_app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The key's name or id."),
    config: Path | None = ConfigOpt,
    database: str | None = DatabaseOpt,
) -> None:
    """Revoke a key; requests with it are refused from the next one on."""
    from incidentd.auth.keys import revoke_key

    store = _store(config, database)
    try:
        done = revoke_key(store, name)
    finally:
        store.close()
    if not done:
        typer.echo(f"error: no active key {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
