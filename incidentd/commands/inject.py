"""``incidentd inject FAULT --target URL``: put one fault of the taxonomy into a running demo model server.

The taxonomy and the injection itself are in incidentd/injection.py; this module is the command.

Every fault is named after what it simulates (docs/faults.md). Most go to the server's
``POST /admin/faults`` (it must run with ``--enable-fault-injection``); ``bad_version`` is a
``POST /admin/load``; the GPU faults rewrite the sidecar's simulated GPU state file.

    incidentd inject unit_change --param feature=20 --param factor=1000 --target http://127.0.0.1:8081
    incidentd inject bad_version --param version=v2 --target http://127.0.0.1:8081
    incidentd inject gpu_thermal --param gpu_state=/tmp/gpu.json --target http://127.0.0.1:8081
    incidentd inject clear --target http://127.0.0.1:8081
"""
from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from incidentd.injection import InjectError, catalog, clear, inject


def register(app: typer.Typer) -> None:
    app.command("inject")(inject_command)


def inject_command(
    fault: Annotated[str, typer.Argument(help="Fault to inject, 'clear' to clear runtime faults, or 'list'.",
                                         show_default=False)],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE, repeatable.")] = None,
    target: Annotated[str, typer.Option("--target", help="Base URL of the model server.")
                      ] = "http://127.0.0.1:8081",
    timeout: Annotated[float, typer.Option("--timeout", help="HTTP timeout in seconds.")] = 10.0,
) -> None:
    """Inject a fault of the taxonomy (model, data, hardware) into a running demo model server.

    Prints what was injected as one JSON object; 'incidentd inject list' prints every fault and its parameters.

    Exit 2: unknown fault or bad parameter (named). Exit 1: the target refused or cannot be reached.
    """
    pairs = list(param or [])
    try:
        if fault == "list":
            out: Any = catalog()
        elif fault == "clear":
            out = clear(pairs, target, timeout)
        else:
            out = inject(fault, pairs, target, timeout)
    except InjectError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    typer.echo(json.dumps(out, sort_keys=True))
