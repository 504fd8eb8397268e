"""``incidentd model-server``: run the demo digits classifier behind its instrumented HTTP API.

The command itself is incidentd/model_server/cli.py; ``python -m incidentd.model_server`` runs the same one.
"""
from __future__ import annotations

import typer

from incidentd.model_server.cli import model_server


def register(app: typer.Typer) -> None:
    app.command("model-server")(model_server)
