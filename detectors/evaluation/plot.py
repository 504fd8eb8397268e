"""A picture of a detector's NAB scores against the labeled windows (matplotlib, imported only here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from detectors.errors import InvalidInput
from detectors.evaluation.backtest import nab_files

Results = dict[str, tuple[npt.NDArray[np.float64], list[str]]]


def default_keys(results: Results) -> list[str]:
    """One file per category: the first in sorted order."""
    keys: dict[str, str] = {}
    for key in sorted(results):
        keys.setdefault(key.split("/")[0], key)
    return list(keys.values())


def plot_nab_scores(results: Results, labels_path: str | Path, path: str | Path,
                    keys: list[str] | None = None, threshold: float | None = None, title: str = "") -> Path:
    """One panel per file: the anomaly score per row, windows shaded, the probationary period hatched,
    detections at ``threshold`` (the corpus threshold, when given) marked. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {f.key: f for f in nab_files(results, labels_path)}
    chosen = keys or default_keys(results)
    missing = [k for k in chosen if k not in results]
    if missing:
        raise InvalidInput(f"--plot-files: not among the files run: {', '.join(missing)}")
    fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.2 * len(chosen)), squeeze=False)
    for ax, key in zip(axes[:, 0], chosen):
        scores = results[key][0]
        f = files[key]
        rows = np.arange(len(scores))
        ax.axvspan(0, f.probation, color="0.85", hatch="//", lw=0, label="probation")
        for k, (lo, hi) in enumerate(f.windows):
            ax.axvspan(lo, hi, color="tab:orange", alpha=0.35, lw=0, label="window" if k == 0 else None)
        ax.plot(rows, scores, lw=0.7, color="tab:blue", label="score")
        if threshold is not None:
            det = np.flatnonzero(scores >= threshold)
            det = det[det >= f.probation]
            ax.plot(det, scores[det], "v", ms=5, color="tab:red", label=f"detection (>= {threshold:.4g})")
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlim(0, len(scores))
        ax.set_title(key, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncols=4)
    axes[-1, 0].set_xlabel("row")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
