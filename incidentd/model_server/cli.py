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
) -> None:
    """Serve the demo digits classifier; trains v1 into an empty registry on first start."""
    import uvicorn

    from incidentd.model_server.app import ModelServerSettings, create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ModelServerSettings(registry_dir=registry, model_name=model_name,
                                   enable_fault_injection=enable_fault_injection, device=device)
    app = create_app(settings)
    print(f"model server: http://{host}:{port} (model {model_name}, version {app.state.holder.version}, "
          f"registry {settings.registry_dir}, fault injection {'on' if enable_fault_injection else 'off'})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)


def main() -> None:
    """``python -m incidentd.model_server``: the same command without the ``incidentd`` prefix."""
    typer.run(model_server)
