"""The model server's only CLI: ``incidentd model-server`` (incidentd/commands/model_server.py registers it)
and ``python -m incidentd.model_server`` run this same command: the demo digits classifier behind its
instrumented HTTP API.

It lives in the model server's package, not in incidentd/commands/, so that ``python -m
incidentd.model_server`` does not import the command package (which imports the model server: a cycle).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def model_server(
    registry: Annotated[Path, typer.Option("--registry", help="Model registry directory.")] = Path("./registry"),
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8081,
    enable_fault_injection: Annotated[bool, typer.Option(
        "--enable-fault-injection", help="Allow POST /admin/faults (demo and tests only).")] = False,
    model_name: Annotated[str, typer.Option("--model-name", help="Value of the 'model' metric label.")] = "digits",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    admin_token_file: Annotated[Path | None, typer.Option(
        "--admin-token-file", help="File holding the token /admin/* requires (else env "
                                   "INCIDENTD_MODEL_SERVER_ADMIN_TOKEN).")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Listen beyond loopback with no admin token (warned at every start).")] = False,
) -> None:
    """Serve the demo digits classifier; trains v1 into an empty registry on first start."""
    import uvicorn

    from incidentd.model_server.app import ModelServerSettings, create_app
    from incidentd.model_server.auth import check_admin_bind, load_token

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        token = load_token(admin_token_file)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    refused = check_admin_bind(host, token, insecure)
    if refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(2)
    if not token:
        logging.getLogger(__name__).warning("the admin API (/admin/*) is open to anyone who can reach %s:%d%s",
                                            host, port, " (--insecure)" if insecure else "")
    settings = ModelServerSettings(registry_dir=registry, model_name=model_name,
                                   enable_fault_injection=enable_fault_injection, device=device,
                                   admin_token=token)
    app = create_app(settings)
    print(f"model server: http://{host}:{port} (model {model_name}, version {app.state.holder.version}, "
          f"registry {settings.registry_dir}, fault injection {'on' if enable_fault_injection else 'off'}, "
          f"admin token {'required' if token else 'off'})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)


def main() -> None:
    """``python -m incidentd.model_server``: the same command without the ``incidentd`` prefix."""
    typer.run(model_server)
