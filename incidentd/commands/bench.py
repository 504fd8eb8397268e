"""`incidentd bench faults`: the fault-injection benchmark of diagnosis and remediation."""
from __future__ import annotations

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Reproducible benchmarks.")


@bench_app.command("faults")
def faults(
    fast: bool = typer.Option(False, "--fast", help="Short intervals (as in `incidentd demo --fast`)."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Rounds: every fault once per round, plus a control."),
    only: list[str] = typer.Option([], "--fault", help="Only this fault (repeatable); default: the taxonomy."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    plot: str | None = typer.Option(None, "--plot", help="Also write a PNG of detect/recover times per fault."),
) -> None:
    """Inject every fault of the taxonomy REPEAT times with healthy controls; report accuracy, MTTD, MTTR."""
    import json
    import sys

    from incidentd.bench import run_bench
    from incidentd.injection import FAULTS

    unknown = [f for f in only if f not in FAULTS]
    if unknown:
        typer.echo(f"error: unknown fault(s) {unknown}; known: {sorted(FAULTS)}", err=True)
        raise typer.Exit(2)
    report = run_bench(fast, repeat, list(only) or None, lambda m: print(m, file=sys.stderr, flush=True))
    if plot:
        from incidentd.plots import render_bench

        print(f"plot: {render_bench(report, plot)}", file=sys.stderr)
    if as_json:
        print(json.dumps(report))
        return
    typer.echo(f"runs {report['runs']}  domain accuracy {report['domain_accuracy']:.2f}  root-cause accuracy "
               f"{report['root_cause_accuracy']:.2f}  MTTD {report['mttd_median_s']}s  MTTR {report['mttr_median_s']}s  "
               f"false incidents {report['false_incidents']}  false remediations {report['false_remediations']}")
    for f in report["per_fault"]:
        margin = (f"  margin before harm {f['margin_median_s']}s of {f['harm_s']}s" if "harm_s" in f else "")
        typer.echo(f"  {f['fault']:<20} runs {f['runs']}  domain {f['domain_correct']}/{f['runs']}  root cause "
                   f"{f['root_cause_correct']}/{f['runs']}  MTTD {f['mttd_median_s']}  MTTR {f['mttr_median_s']}"
                   + margin)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
