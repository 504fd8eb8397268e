"""A picture of the most drifted features, for humans (matplotlib, imported only here)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detectors.drift import MULTIVARIATE_NAME, DriftReport


def plot_drift(report: DriftReport, reference: Any, current: Any, path: str | Path, top: int = 6) -> Path:
    """Overlay reference and current distributions of the ``top`` most drifted features; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for f in report.ranked():
        if f.name not in names and f.name != MULTIVARIATE_NAME:
            names.append(f.name)
        if len(names) == top:
            break
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    best = {f.name: f for f in reversed(report.ranked())}
    for ax, name in zip(axes.ravel(), names):
        r, c = reference[name], current[name]
        f = best[name]
        numeric = np.issubdtype(np.asarray(r).dtype, np.number) and np.issubdtype(np.asarray(c).dtype, np.number)
        if numeric:
            r = np.asarray(r, dtype=float)
            c = np.asarray(c, dtype=float)
            r, c = r[np.isfinite(r)], c[np.isfinite(c)]
            lo, hi = np.nanpercentile(np.r_[r, c], [0.5, 99.5])
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
            ax.hist(r, bins=bins, density=True, alpha=0.5, label="reference")
            ax.hist(c, bins=bins, density=True, alpha=0.5, label="current")
        else:
            import pandas as pd

            rc = pd.Series(r).value_counts(normalize=True)
            cc = pd.Series(c).value_counts(normalize=True)
            cats = list(rc.index.union(cc.index))[:20]
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [rc.get(k, 0) for k in cats], 0.4, label="reference")
            ax.bar(x + 0.2, [cc.get(k, 0) for k in cats], 0.4, label="current")
            ax.set_xticks(x, [str(k) for k in cats], rotation=45, ha="right")
        p = "" if f.p_value is None else f", p={f.p_value:.2g}"
        ax.set_title(f"{name} ({f.test}={f.statistic:.3g}{p}){' DRIFT' if f.drift else ''}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
