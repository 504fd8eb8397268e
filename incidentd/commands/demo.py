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
) -> None:
    """Run model server, sidecar and service; inject faults one at a time; report detection and recovery."""
    import sys

    from incidentd.demo import Demo, format_table, passed, to_json

    d = Demo(fast=fast, workdir=workdir, progress=lambda m: print(m, file=sys.stderr, flush=True),
             plots=not no_plots)
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
