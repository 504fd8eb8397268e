"""`incidentd serve`: the incident service (API, webhooks, scheduler)."""
from __future__ import annotations

from pathlib import Path

import typer


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML settings file."),
    host: str | None = typer.Option(None, help="Listen address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Listen port (default 8080)."),
    target: list[str] = typer.Option([], "--target", help="Sidecar URL to scrape (repeatable)."),
    prometheus: str | None = typer.Option(None, "--prometheus", help="Read metrics from this Prometheus."),
    model_server: str | None = typer.Option(None, "--model-server", help="Model server admin base URL."),
    database: Path | None = typer.Option(None, help="SQLite file (default incidentd.db)."),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="State database URL, e.g. postgresql+psycopg://u@h/db."),
    migrate: bool | None = typer.Option(None, "--migrate/--no-migrate",
                                        help="Run schema migrations at start (default: SQLite only)."),
    log_level: str = typer.Option("INFO", help="Log level."),
    insecure: bool = typer.Option(False, "--insecure",
                                  help="Listen beyond loopback even with no credentials configured (warned at "
                                       "every start; see docs/security.md)."),
    ssl_certfile: Path | None = typer.Option(None, "--ssl-certfile", help="Serve HTTPS with this certificate "
                                             "(PEM, chain included); see docs/security.md."),
    ssl_keyfile: Path | None = typer.Option(None, "--ssl-keyfile", help="The certificate's private key (PEM)."),
) -> None:
    """Run the incident service: scrape, detect, diagnose, remediate, verify; serve the REST API."""
    import logging

    import uvicorn

    from diagnosis.rules import RuleError
    from incidentd import logs
    from incidentd.api.app import create_app
    from incidentd.auth.bind import check_bind
    from incidentd.config import Settings
    from incidentd.errors import ConfigError, StorageError
    from incidentd.graceful_server import GracefulServer

    logs.setup(log_level)
    try:
        settings = Settings.load(config, host=host, port=port, scrape_targets=target or None,
                                 prometheus_url=prometheus, model_server_url=model_server, database=database,
                                 database_url=database_url, database_migrate=migrate)
        if insecure:
            settings.security.insecure = True
        app = create_app(settings)
    except (ConfigError, RuleError, StorageError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    sec = settings.security
    bind = check_bind(settings.host, app.state.authenticator.credentials_configured(), sec.insecure,
                      tuple(s.value for s in sec.anonymous_scopes))
    log = logging.getLogger("incidentd.serve")
    for w in bind.warnings:
        log.warning(w)
        typer.echo(f"warning: {w}", err=True)
    for n in bind.notes:
        log.info(n)
        typer.echo(n, err=True)
    if not bind.allowed:
        typer.echo(f"error: {bind.error}", err=True)
        app.state.runtime.store.close()
        raise typer.Exit(2)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        typer.echo("error: --ssl-certfile and --ssl-keyfile go together", err=True)
        raise typer.Exit(2)
    scheme = "https" if ssl_certfile else "http"
    typer.echo(f"incidentd serving on {scheme}://{settings.host}:{settings.port}", err=True)
    server = GracefulServer(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level.lower(),
                                           access_log=False,
                                           ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                                           ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None))
    server.run()
    if server.stopped_by is not None:
        typer.echo(f"incidentd stopped on {server.stopped_by.name}: cycle finished, baselines saved", err=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
