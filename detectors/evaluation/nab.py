"""A scorer compatible with the Numenta Anomaly Benchmark (see ../shared/nab/README.md).

    >>> import numpy as np
    >>> f = NabFile("demo/a.csv", n_rows=100, windows=[(40, 49)])
    >>> perfect = np.zeros(100); perfect[40] = 1.0
    >>> round(score_corpus([f], [perfect])["standard"].normalized, 1)
    100.0

Rows are positions in file order. The first ``min(floor(0.15 N), 750)`` rows are never scored. A
detection inside a window is worth ``A_TP * sigma(y) / sigma(-1)`` with ``y = -(r - i + 1) / W``, only the
earliest detection of a window counts, a missed window costs ``A_FN``, and a detection outside every
window costs ``A_FP`` (less right after a window). One threshold for the whole corpus is chosen per
profile by an exact sweep over every distinct score (plus 1.1 = never detect); ties go to the higher
threshold.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.errors import InvalidInput

PROFILES: dict[str, tuple[float, float, float]] = {   # name: (A_TP, A_FP, A_FN)
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}
NEVER = 1.1


def sigma(x: np.ndarray | float) -> np.ndarray | float:
    """NAB's scaled sigmoid: 2 / (1 + e^(5x)) - 1."""
    return 2.0 / (1.0 + np.exp(5.0 * np.asarray(x, dtype=float))) - 1.0


@dataclass(frozen=True, slots=True)
class NabFile:
    """One data file: its key (``category/name.csv``), row count and windows as inclusive row ranges."""

    key: str
    n_rows: int
    windows: Sequence[tuple[int, int]]

    @property
    def probation(self) -> int:
        return min(math.floor(0.15 * self.n_rows), 750)


@dataclass(frozen=True, slots=True)
class ProfileScore:
    profile: str
    threshold: float
    raw: float
    normalized: float
    tp: int
    fp: int
    fn: int


def row_values(f: NabFile, a_tp: float, a_fp: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row detection value and window id (-1 outside every window)."""
    n = f.n_rows
    val = np.full(n, -a_fp)
    wid = np.full(n, -1, dtype=np.int64)
    s_neg1 = float(sigma(-1.0))
    prev_end: int | None = None
    prev_w = 1
    idx = np.arange(n)
    for k, (lo, hi) in enumerate(f.windows):
        w = hi - lo + 1
        if prev_end is not None:
            gap = idx[prev_end + 1: lo]
            x = (gap - prev_end) / max(prev_w - 1, 1)
            val[prev_end + 1: lo] = np.where(x <= 3, a_fp * sigma(x), -a_fp)
        i = idx[lo: hi + 1]
        val[lo: hi + 1] = a_tp * sigma(-(hi - i + 1) / w) / s_neg1
        wid[lo: hi + 1] = k
        prev_end, prev_w = hi, w
    if prev_end is not None:
        gap = idx[prev_end + 1:]
        x = (gap - prev_end) / max(prev_w - 1, 1)
        val[prev_end + 1:] = np.where(x <= 3, a_fp * sigma(x), -a_fp)
    return val, wid


def file_score(f: NabFile, scores: np.ndarray, threshold: float, profile: str = "standard") -> float:
    """S_f(theta): the plain, direct definition (used to check the sweep)."""
    a_tp, a_fp, a_fn = PROFILES[profile]
    val, wid = row_values(f, a_tp, a_fp)
    det = np.asarray(scores, dtype=float) >= threshold
    det[: f.probation] = False
    total = float(val[det & (wid < 0)].sum())
    for k in range(len(f.windows)):
        hit = np.flatnonzero(det & (wid == k))
        total += float(val[hit[0]]) if len(hit) else -a_fn
    return total


def _events(f: NabFile, scores: np.ndarray, a_tp: float, a_fp: float, a_fn: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """(threshold, change in S_f) pairs: lowering the threshold to each score adds its change."""
    s = np.asarray(scores, dtype=float)
    if s.shape != (f.n_rows,):
        raise InvalidInput(f"{f.key}: {len(s)} scores for {f.n_rows} rows")
    if not np.all(np.isfinite(s)):
        raise InvalidInput(f"{f.key}: scores must be finite")
    val, wid = row_values(f, a_tp, a_fp)
    p = f.probation
    s, val, wid = s[p:], val[p:], wid[p:]
    outside = wid < 0
    th = [s[outside]]
    dv = [val[outside]]
    for k in range(len(f.windows)):
        inside = np.flatnonzero(wid == k)
        if len(inside) == 0:
            continue
        ws = s[inside]
        order = np.argsort(-ws, kind="stable")
        # walking down the scores, the earliest detected row only improves when a new row is earlier
        pos = inside[order]
        running = np.minimum.accumulate(pos)
        new = np.r_[True, running[1:] < running[:-1]]
        cur_val = val[running[new]]
        prev = np.r_[-a_fn, cur_val[:-1]]
        th.append(ws[order][new])
        dv.append(cur_val - prev)
    return np.concatenate(th), np.concatenate(dv)


def optimize(files: Sequence[NabFile], scores: Sequence[np.ndarray], profile: str) -> ProfileScore:
    """Best corpus threshold for one profile, by an exact sweep over every distinct score."""
    a_tp, a_fp, a_fn = PROFILES[profile]
    n_windows = sum(len(f.windows) for f in files)
    ths, dvs = [], []
    for f, s in zip(files, scores):
        t, d = _events(f, s, a_tp, a_fp, a_fn)
        ths.append(t)
        dvs.append(d)
    th = np.concatenate(ths) if ths else np.empty(0)
    dv = np.concatenate(dvs) if dvs else np.empty(0)
    base = -a_fn * n_windows
    best_t, best = NEVER, base
    if len(th):
        order = np.argsort(-th, kind="stable")
        th, dv = th[order], dv[order]
        total = base + np.cumsum(dv)
        last = np.r_[th[1:] != th[:-1], True]          # the total after all rows of one threshold value
        cand_t, cand_v = th[last], total[last]
        i = int(np.argmax(cand_v))                       # first max in descending order = highest threshold
        if cand_v[i] > best:
            best_t = float(cand_t[i])
    # recompute exactly at the chosen threshold (no cumulative-sum rounding) and count outcomes
    raw, tp, fp, fn = 0.0, 0, 0, 0
    for f, s in zip(files, scores):
        raw += file_score(f, s, best_t, profile)
        det = np.asarray(s) >= best_t
        det[: f.probation] = False
        _, wid = row_values(f, a_tp, a_fp)
        fp += int((det & (wid < 0)).sum())
        for k in range(len(f.windows)):
            if (det & (wid == k)).any():
                tp += 1
            else:
                fn += 1
    s_null = -a_fn * n_windows
    s_perfect = a_tp * n_windows
    norm = 100.0 * (raw - s_null) / (s_perfect - s_null) if n_windows else 0.0
    return ProfileScore(profile, best_t, raw, norm, tp, fp, fn)


def score_corpus(files: Sequence[NabFile], scores: Sequence[np.ndarray],
                 profiles: Iterable[str] = tuple(PROFILES)) -> dict[str, ProfileScore]:
    """Normalized NAB scores of one detector's outputs, per profile."""
    return {p: optimize(files, scores, p) for p in profiles}


# -- reading the NAB layout ------------------------------------------------------------------------
def load_labels(labels_path: str | Path) -> dict[str, list[tuple[str, str]]]:
    p = Path(labels_path)
    try:
        raw = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{p}: cannot read NAB windows JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{p}: expected a JSON object of file -> windows")
    out = {}
    for key, wins in raw.items():
        out[key] = [(str(a).split(".")[0], str(b).split(".")[0]) for a, b in wins]
    return out


def windows_to_rows(key: str, timestamps: Sequence[str], windows: Sequence[tuple[str, str]]
                    ) -> list[tuple[int, int]]:
    first: dict[str, int] = {}
    for i, t in enumerate(timestamps):
        first.setdefault(str(t).split(".")[0], i)
    rows = []
    for a, b in windows:
        if a not in first or b not in first:
            raise InvalidInput(f"{key}: window [{a}, {b}] has an end that is not a timestamp of the file")
        rows.append((first[a], first[b]))
    return rows


def list_data_files(data_dir: str | Path) -> list[str]:
    """``category/name.csv`` keys of a NAB-layout data folder, sorted."""
    d = Path(data_dir)
    if not d.is_dir():
        raise InvalidInput(f"{d}: not a directory")
    keys = sorted(str(p.relative_to(d)) for p in d.glob("*/*.csv"))
    if not keys:
        raise InvalidInput(f"{d}: no <category>/<file>.csv data files")
    return keys
