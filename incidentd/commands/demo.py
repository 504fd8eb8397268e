"""`incidentd demo`: the whole loop, embedded, with injected faults."""
from __future__ import annotations

from pathlib import Path

import typer


def demo(
    fast: bool = typer.Option(False, "--fast", help="Short intervals: the whole demo in under 5 minutes."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    workdir: Path | None = typer.Option(None, "--workdir",
                                           help="Keep registry, database, logs and plots here (default: temp)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not render incident plots."),
    server: str = typer.Option("ours", "--server", help="The model server the faults hit: ours (incidentd's "
                               "demo server), mlserver, torchserve or triton (a real MLServer, TorchServe or Triton in its own "
                               "venv, watched through the sidecar's proxy and acted on through the server's "
                               "own control API)."),
) -> None:
    """Run model server, sidecar and service; inject faults one at a time; report detection and recovery."""
    import sys

    from incidentd.demo import SERVERS, Demo, format_table, passed, to_json

    if server not in SERVERS:
        typer.echo(f"error: --server {server!r}: the demo runs on {', '.join(SERVERS)}", err=True)
        raise typer.Exit(2)
    d = Demo(fast=fast, workdir=workdir, progress=lambda m: print(m, file=sys.stderr, flush=True),
             plots=not no_plots, server=server)
    try:
        report = d.run()
    except KeyboardInterrupt:
        d.say("interrupted")
        raise typer.Exit(130) from None
    except Exception as e:
        d.say(f"demo failed: {e}")
        raise typer.Exit(1) from None
    finally:
        d.stop()
    if as_json:
        print(to_json(report))
    else:
        print(format_table(report))
        print(f"\nworkdir (logs, database, plots): {report['details']['workdir']}")
    if workdir is None and as_json:
        d.cleanup()
    raise typer.Exit(0 if passed(report) else 3)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
