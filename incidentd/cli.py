"""The ``incidentd`` command: a thin layer over library functions; each command's docstring is its help."""
from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "incidentd.commands.serve",
    "incidentd.commands.demo",
    "incidentd.commands.model_server",
    "incidentd.commands.sidecar",
    "incidentd.commands.backtest",
    "incidentd.commands.drift",
    "incidentd.commands.rules",
    "incidentd.commands.inject",
    "incidentd.commands.bench",
    "incidentd.commands.registry",
    "incidentd.commands.keys",
    "incidentd.commands.db",
)


def build_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False,
                      help="Observability and incident diagnosis for ML models in production.")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
