"""``incidentd drift``: compare a current data file with a reference file, feature by feature."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("drift")(drift)


def drift(
    reference: Annotated[Path, typer.Option("--reference", help="Reference data, CSV or Parquet.")],
    current: Annotated[Path, typer.Option("--current", help="Current data, CSV or Parquet, same columns.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object.")] = False,
    tests: Annotated[str, typer.Option("--tests", help="Comma-separated: ks, psi, chi2, wasserstein, jsd, "
                                       "mmd, pca. Default: ks for numeric, chi2 for categorical.")] = "ks,chi2",
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level after correction.")] = 0.01,
    correction: Annotated[str, typer.Option("--correction", help="fdr_bh, bonferroni or none.")] = "fdr_bh",
    categorical: Annotated[str, typer.Option("--categorical", help="Comma-separated columns to treat as "
                                             "categorical (non-numeric columns always are).")] = "",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of the most drifted "
                                                 "features.")] = None,
) -> None:
    """Test every column of CURRENT against REFERENCE and report which features drifted.

    Numeric columns get a two-sample KS test, categorical ones a chi-square test; p-values are corrected
    for multiple testing (Benjamini-Hochberg). Exit status is 0 whether or not drift is found, 2 on bad
    input.
    """
    import json
    import sys

    from detectors.drift import DriftSuite
    from detectors.errors import InvalidInput
    from detectors.io import read_table

    try:
        ref = read_table(reference)
        cur = read_table(current)
        suite = DriftSuite(tests=tests, alpha=alpha, correction=correction)
        suite.fit(ref, categorical=[c.strip() for c in categorical.split(",") if c.strip()])
        report = suite.compare(cur)
    except InvalidInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if plot is not None:
        from detectors.plotting import plot_drift

        plot_drift(report, ref, cur, plot)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    verdict = "DRIFT" if report.drift else "no drift"
    typer.echo(f"{verdict}: {len(report.drifted_features)} of {len(suite.feature_names)} features drifted "
               f"(alpha={alpha}, correction={correction}; reference {report.n_reference} rows, current "
               f"{report.n_current} rows)")
    typer.echo(f"{'feature':<24} {'test':<12} {'statistic':>12} {'p_value':>12} {'adj_p':>12}  drift")
    order = sorted(range(len(report.features)), key=lambda i: report.ranked().index(report.features[i]))
    for i in order:
        f = report.features[i]
        adj = report.adjusted_p_values[i] if report.adjusted_p_values else None
        p = "-" if f.p_value is None else f"{f.p_value:.3g}"
        a = "-" if adj is None else f"{adj:.3g}"
        typer.echo(f"{f.name:<24} {f.test:<12} {f.statistic:>12.4g} {p:>12} {a:>12}  {'yes' if f.drift else ''}")
    for name, k in report.missing.items():
        typer.echo(f"note: {k} missing value(s) of {name!r} in current data were ignored", err=True)
