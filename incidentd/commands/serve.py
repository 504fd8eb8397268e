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
    log_level: str = typer.Option("INFO", help="Log level."),
) -> None:
    """Run the incident service: scrape, detect, diagnose, remediate, verify; serve the REST API."""
    import uvicorn

    from diagnosis.rules import RuleError
    from incidentd import logs
    from incidentd.api.app import create_app
    from incidentd.config import Settings
    from incidentd.errors import ConfigError
    from incidentd.graceful_server import GracefulServer

    logs.setup(log_level)
    try:
        settings = Settings.load(config, host=host, port=port, scrape_targets=target or None,
                                 prometheus_url=prometheus, model_server_url=model_server, database=database)
        app = create_app(settings)
    except (ConfigError, RuleError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"incidentd serving on http://{settings.host}:{settings.port}", err=True)
    server = GracefulServer(uvicorn.Config(app, host=settings.host, port=settings.port,
                                           log_level=log_level.lower(), access_log=False))
    server.run()
    if server.stopped_by is not None:
        typer.echo(f"incidentd stopped on {server.stopped_by.name}: cycle finished, baselines saved", err=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
