"""``incidentd backtest``: score a series (or a whole NAB folder) causally with a detector."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)


def backtest(
    input: Annotated[Path | None, typer.Option("--input", help="CSV with columns timestamp,value.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Output CSV (with --input) or results "
                                                   "folder (with --nab).")] = None,
    detector: Annotated[str | None, typer.Option("--detector", help="Registered detector name "
                                                    "(default: the NAB-tuned default).")] = None,
    nab: Annotated[Path | None, typer.Option("--nab", help="NAB-layout data folder "
                                                "(<category>/<file>.csv).")] = None,
    score: Annotated[Path | None, typer.Option("--score", help="NAB windows JSON: print the standard, "
                                                  "low-FP and low-FN scores.")] = None,
    categories: Annotated[str, typer.Option("--categories", help="Comma-separated NAB categories to run "
                                            "(default: all).")] = "",
    protocol: Annotated[str, typer.Option("--protocol", help="With --nab: 'nab' gives detectors the file's "
                                          "value range and probationary period (15% of its rows) as NAB "
                                          "does; 'online' gives neither (range learned online, as in the "
                                          "service); 'both' runs both and prints both scores.")] = "nab",
    plot: Annotated[Path | None, typer.Option("--plot", help="With --nab and --score: write a PNG of "
                                              "scores against the labeled windows for a few files.")] = None,
    plot_files: Annotated[str, typer.Option("--plot-files", help="Comma-separated file keys "
                                            "(category/name.csv) for --plot (default: one per "
                                            "category).")] = "",
) -> None:
    """Score every row of a series with a detector; causal: row t's score uses rows up to t only.

    With --input/--output: writes timestamp,value,anomaly_score (anomaly_score in [0, 1]) for every input
    row. With --nab: runs every file of a NAB data folder and writes NAB's results layout
    (OUTPUT/<category>/<detector>_<file>.csv; with --protocol both, OUTPUT/<protocol>/...); with --score
    also prints NAB scores.
    """
    import sys

    from detectors.errors import InvalidInput

    try:
        if nab is not None:
            from detectors.evaluation.backtest import NabProtocol, backtest_nab, score_nab

            def progress(i: int, n: int, key: str) -> None:
                sys.stderr.write(f"\r[{i}/{n}] {key:<70}")
                if i == n:
                    sys.stderr.write("\n")
                sys.stderr.flush()

            if output is None and score is None:
                raise InvalidInput("--nab needs --output and/or --score")
            if protocol not in ("nab", "online", "both"):
                raise InvalidInput(f"--protocol must be nab, online or both, got {protocol!r}")
            protocols = list(NabProtocol) if protocol == "both" else [NabProtocol(protocol)]
            if plot is not None and score is None:
                raise InvalidInput("--plot needs --score (the labeled windows)")
            cats = {c.strip() for c in categories.split(",") if c.strip()} or None
            for proto in protocols:
                out_dir = output / proto.value if (output is not None and len(protocols) > 1) else output
                results = backtest_nab(nab, out_dir, detector, progress=progress, categories=cats,
                                       protocol=proto)
                if score is not None:
                    nab_scores = score_nab(results, score)
                    n_windows = sum(r.tp + r.fn for r in nab_scores.values()) // max(1, len(nab_scores))
                    typer.echo(f"NAB scores over {len(results)} files, {n_windows} windows "
                               f"(detector {detector or 'default'}, protocol {proto.value}):")
                    for prof, label in (("standard", "standard"), ("reward_low_FP_rate", "low FP"),
                                        ("reward_low_FN_rate", "low FN")):
                        r = nab_scores[prof]
                        typer.echo(f"  {label:<9} {r.normalized:6.1f}   (threshold {r.threshold:.6g}, "
                                   f"TP {r.tp}, FN {r.fn}, FP rows {r.fp})")
                    if plot is not None:
                        from detectors.evaluation.plot import plot_nab_scores

                        keys = [k.strip() for k in plot_files.split(",") if k.strip()] or None
                        dest = plot if len(protocols) == 1 else plot.with_name(
                            f"{plot.stem}-{proto.value}{plot.suffix}")
                        plot_nab_scores(results, score, dest, keys=keys,
                                        threshold=nab_scores["standard"].threshold,
                                        title=f"{detector or 'default'} ({proto.value} protocol)")
                        typer.echo(f"wrote {dest}", err=True)
        elif input is not None:
            if output is None:
                raise InvalidInput("--input needs --output")
            from detectors.evaluation.backtest import backtest_file

            rows = backtest_file(input, output, detector)
            typer.echo(f"wrote {len(rows)} rows to {output}", err=True)
        else:
            raise InvalidInput("give --input FILE.csv --output OUT.csv, or --nab DATA_DIR")
    except InvalidInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
