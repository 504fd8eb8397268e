"""``incidentd model-server``: run the demo digits classifier behind its instrumented HTTP API."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("model-server")(model_server)


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
    from incidentd.model_server.__main__ import run_server

    run_server(registry, host, port, enable_fault_injection, model_name, device, log_level, admin_token_file,
               insecure)
