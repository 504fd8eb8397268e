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
    compound: bool = typer.Option(False, "--compound", help="Run pairs of faults from different domains at once "
                                  "(model+data, model+hardware, data+hardware; two pairs each) instead of the "
                                  "single faults; adds compound_accuracy and per-pair results."),
    pair: list[str] = typer.Option([], "--pair", help="With --compound: only this pair, as FAULT+FAULT "
                                   "(repeatable); default: the six built-in pairs."),
    server: str = typer.Option("ours", "--server", help="The model server the faults hit: ours, mlserver, torchserve or triton "
                               "(every fault of the taxonomy that applies there; the JSON lists the others)."),
) -> None:
    """Inject every fault of the taxonomy REPEAT times with healthy controls; report accuracy, MTTD, MTTR."""
    import json
    import sys

    from incidentd.bench import NOT_ON_SERVER, run_bench
    from incidentd.injection import FAULTS

    unknown = [f for f in only if f not in FAULTS]
    if unknown:
        typer.echo(f"error: unknown fault(s) {unknown}; known: {sorted(FAULTS)}", err=True)
        raise typer.Exit(2)
    if server not in NOT_ON_SERVER:
        typer.echo(f"error: --server {server!r}: the bench runs on {', '.join(NOT_ON_SERVER)}", err=True)
        raise typer.Exit(2)
    skipped = {f: NOT_ON_SERVER[server][f] for f in only if f in NOT_ON_SERVER[server]}
    if skipped:
        typer.echo("error: " + "; ".join(f"{f} does not apply on {server}: {why}" for f, why in skipped.items()),
                   err=True)
        raise typer.Exit(2)
    if compound and server != "ours":
        typer.echo("error: --compound runs on our demo server only", err=True)
        raise typer.Exit(2)
    if compound and only:
        typer.echo("error: --compound runs pairs; pick them with --pair FAULT+FAULT, not --fault", err=True)
        raise typer.Exit(2)
    if pair and not compound:
        typer.echo("error: --pair needs --compound", err=True)
        raise typer.Exit(2)
    pairs = [_pair(p) for p in pair]
    report = run_bench(fast, repeat, list(only) or None, lambda m: print(m, file=sys.stderr, flush=True),
                       compound=compound, server=server, pair_names=pairs or None)
    if plot and not compound:
        from incidentd.plots import render_bench

        print(f"plot: {render_bench(report, plot)}", file=sys.stderr)
    if as_json:
        print(json.dumps(report))
        return
    if compound:
        typer.echo(f"compound pairs {report['compound_runs']}  compound accuracy {report['compound_accuracy']}  "
                   f"false incidents {report['false_incidents']}  false remediations {report['false_remediations']}")
        for p in report["compound"]:
            typer.echo(f"  {' + '.join(p['pair']):<36} ranked {', '.join(p['ranked']) or '-'}  actions "
                       f"{', '.join(a['kind'] + ':' + a['status'] for a in p['actions']) or 'none'}  "
                       f"{'right' if p['right'] else 'WRONG'}")
        return
    typer.echo(f"runs {report['runs']}  domain accuracy {report['domain_accuracy']:.2f}  root-cause accuracy "
               f"{report['root_cause_accuracy']:.2f}  MTTD {report['mttd_median_s']}s  MTTR {report['mttr_median_s']}s  "
               f"false incidents {report['false_incidents']}  false remediations {report['false_remediations']}")
    for f in report["per_fault"]:
        margin = (f"  margin before harm {f['margin_median_s']}s of {f['harm_s']}s" if "harm_s" in f else "")
        typer.echo(f"  {f['fault']:<20} runs {f['runs']}  domain {f['domain_correct']}/{f['runs']}  root cause "
                   f"{f['root_cause_correct']}/{f['runs']}  MTTD {f['mttd_median_s']}  MTTR {f['mttr_median_s']}"
                   + margin)
    for name, why in report.get("not_applicable", {}).items():
        typer.echo(f"  not run on {server}: {name} ({why})")


def _pair(text: str) -> tuple[str, str]:
    """``FAULT+FAULT`` -> the two fault names, each known, from different domains."""
    from incidentd.bench import compound_pairs
    from incidentd.injection import FAULTS

    names = text.split("+")
    if len(names) != 2 or not all(names):
        typer.echo(f"error: --pair {text!r}: expected FAULT+FAULT, for example bad_version+cpu_contention", err=True)
        raise typer.Exit(2)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        typer.echo(f"error: --pair {text!r}: unknown fault(s) {unknown}; known: {sorted(FAULTS)}", err=True)
        raise typer.Exit(2)
    try:
        compound_pairs([(names[0], names[1])])
    except ValueError as e:
        typer.echo(f"error: --pair {text!r}: {e}", err=True)
        raise typer.Exit(2) from None
    return names[0], names[1]


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
