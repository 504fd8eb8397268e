"""Distribution drift between a reference sample (fitted once per model version) and current data.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> suite = DriftSuite(tests=("ks", "psi"), alpha=0.01)
    >>> _ = suite.fit(rng.normal(size=(5000, 3)), feature_names=["a", "b", "c"])
    >>> cur = rng.normal(size=(2000, 3)); cur[:, 1] += 0.5
    >>> report = suite.compare(cur)
    >>> report.drift, report.drifted_features
    (True, ['b'])

Tests (``tests=``): ``ks`` (two-sample Kolmogorov-Smirnov, numeric; statistic and p-value equal to
``scipy.stats.ks_2samp`` with its default ``method='auto'``), ``psi`` (population stability index over
reference-quantile bins, numeric and categorical; no p-value; drift when PSI >= ``psi_threshold``, 0.2 by
default — the customary "significant shift" level), ``chi2`` (chi-square test of homogeneity on category
counts, categorical), ``wasserstein`` (earth mover's distance divided by the reference standard deviation;
drift when >= ``wasserstein_threshold``, 0.1), ``jsd`` (Jensen-Shannon distance, base 2, over the PSI bins or
the categories; drift when >= ``jsd_threshold``, 0.1), ``mmd`` (maximum mean discrepancy with a Gaussian
kernel, per numeric feature, permutation p-value; needs torch, imported only then) and ``pca`` (multivariate:
PCA reconstruction error of current rows compared with held-out reference rows by KS; reported once under
the name ``"(all features)"``).

Dataset decision: a feature drifts when its p-value, corrected over *all* p-value tests of the report
(Benjamini-Hochberg by default), is below ``alpha``, or when a threshold test passes its threshold; the
dataset drifts when any feature does. Each numeric feature's test that has no test of its kind for a
categorical feature falls back to ``chi2`` there.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.errors import InvalidInput

NUMERIC_TESTS = ("ks", "psi", "wasserstein", "jsd", "mmd")
CATEGORICAL_TESTS = ("chi2", "psi", "jsd")
MULTIVARIATE_TESTS = ("pca",)
ALL_TESTS = ("ks", "psi", "chi2", "wasserstein", "jsd", "mmd", "pca")
P_VALUE_TESTS = ("ks", "chi2", "mmd", "pca")
CORRECTIONS = ("fdr_bh", "bonferroni", "none")
MULTIVARIATE_NAME = "(all features)"
_KS_MAX_AUTO_N = 10000   # scipy's ks_2samp 'auto': exact p-values when both samples are at most this big
_PSI_EPS = 1e-4          # proportions are clipped to this before the PSI/JSD logarithms
_KS_GRID_MAX = 65536     # most buckets of the KS grid (current samples under a quarter of it are just sorted)


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One test on one feature. ``p_value`` is the raw (uncorrected) p-value, None for threshold tests."""

    name: str
    test: str
    statistic: float
    p_value: float | None
    drift: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "test": self.test, "statistic": float(self.statistic),
                "p_value": None if self.p_value is None else float(self.p_value), "drift": bool(self.drift)}


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Result of ``DriftSuite.compare``: one ``FeatureDrift`` per feature and test, plus the decision.

    ``adjusted_p_values`` lines up with ``features`` (None for threshold tests); ``missing`` counts the
    NaN/None values of the current data that were ignored, per feature.
    """

    drift: bool
    features: tuple[FeatureDrift, ...]
    alpha: float = 0.01
    correction: str = "fdr_bh"
    adjusted_p_values: tuple[float | None, ...] = ()
    n_reference: int = 0
    n_current: int = 0
    missing: dict[str, int] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features with at least one drifting test, in column order."""
        seen: dict[str, None] = {}
        for f in self.features:
            if f.drift:
                seen.setdefault(f.name, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``incidentd drift --json``."""
        return {"drift": bool(self.drift), "features": [f.to_dict() for f in self.features]}

    def ranked(self) -> list[FeatureDrift]:
        """Features from most to least drifted (smallest p-value first, then largest statistic)."""
        return sorted(self.features, key=lambda f: (not f.drift, 1.0 if f.p_value is None else f.p_value,
                                                    -f.statistic))


@dataclass(frozen=True, slots=True)
class _KsGrid:
    """A monotone bucketing of the real line fitted to the reference, for the KS statistic of big samples.

    ``bucket(x) = clip(trunc((x - lo) * scale), 0, size - 1)`` is non-decreasing in x even in floating
    point, so counting the current values per bucket (O(m), no sort) bounds both ECDFs inside every
    bucket; only the few buckets whose bound could beat the best exact value are sorted and compared
    point by point (``_ks_stat_grid``).
    """

    lo: float
    scale: float
    ref_below: np.ndarray       # ref_below[b]: reference values in buckets < b (length size + 1)
    ref_cdf: np.ndarray         # ref_below / n: F_ref just before bucket b

    @property
    def size(self) -> int:
        return len(self.ref_below) - 1

    def bucket(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):    # far outliers overflow to +-inf and land in an end bucket
            b = np.subtract(x, self.lo)
            b *= self.scale
        np.maximum(b, 0, out=b)
        np.minimum(b, self.size - 1, out=b)
        return np.asarray(b, dtype=np.intp)

    @classmethod
    def fit(cls, sorted_ref: np.ndarray) -> _KsGrid:
        n = len(sorted_ref)
        size = int(min(_KS_GRID_MAX, max(1, n // 8)))   # about eight reference values per bucket
        # spread the buckets over the central 99.8% so that outliers do not coarsen them
        lo, hi = float(sorted_ref[int(0.001 * (n - 1))]), float(sorted_ref[int(0.999 * (n - 1))])
        with np.errstate(over="ignore", divide="ignore"):
            scale = size / (hi - lo) if hi > lo else 1.0
        if not math.isfinite(scale):
            scale = 1.0
        ref_below = np.zeros(size + 1, dtype=np.int64)
        grid = cls(lo, float(scale), ref_below, ref_below / n)
        np.cumsum(np.bincount(grid.bucket(sorted_ref), minlength=size), out=ref_below[1:])
        np.divide(ref_below, n, out=grid.ref_cdf)
        return grid


@dataclass(slots=True)
class _Numeric:
    sorted_ref: np.ndarray      # finite reference values, ascending
    grid: _KsGrid
    edges: np.ndarray           # PSI/JSD bin edges (searchsorted side='left')
    ref_props: np.ndarray       # reference proportion per bin
    std: float


@dataclass(slots=True)
class _Categorical:
    categories: list[Any]
    index: dict[Any, int]
    ref_counts: np.ndarray      # per category, plus one trailing "unseen" slot (0 in the reference)


class DriftSuite:
    """Drift tests of current data against a fitted reference, with multiple-testing correction.

    Fit once per model version (the sorted reference is cached, which makes ``compare`` fast), then call
    ``compare`` on every current window. See the module docstring for the tests and the decision rule.

    >>> import numpy as np
    >>> suite = DriftSuite(tests=("ks",), alpha=0.01)
    >>> _ = suite.fit(np.arange(1000.0).reshape(-1, 1), feature_names=["x"])
    >>> suite.compare(np.arange(1000.0).reshape(-1, 1) + 500).drift
    True
    """

    def __init__(self, tests: Sequence[str] = ("ks", "psi"), alpha: float = 0.01, correction: str = "fdr_bh",
                 psi_threshold: float = 0.2, psi_bins: int = 10, wasserstein_threshold: float = 0.1,
                 jsd_threshold: float = 0.1, mmd_permutations: int = 500, mmd_max_samples: int = 500,
                 pca_variance: float = 0.95, seed: int = 0, workers: int | None = None) -> None:
        if isinstance(tests, str):
            tests = tuple(t.strip() for t in tests.split(",") if t.strip())
        unknown = [t for t in tests if t not in ALL_TESTS]
        if unknown or not tests:
            raise InvalidInput(f"unknown drift test(s) {unknown or list(tests)}; known: {', '.join(ALL_TESTS)}")
        if correction not in CORRECTIONS:
            raise InvalidInput(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
        if not 0.0 < alpha < 1.0:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        if psi_bins < 2:
            raise InvalidInput(f"psi_bins must be >= 2, got {psi_bins}")
        self.tests = tuple(dict.fromkeys(tests))
        self.alpha = float(alpha)
        self.correction = correction
        self.psi_threshold = float(psi_threshold)
        self.psi_bins = int(psi_bins)
        self.wasserstein_threshold = float(wasserstein_threshold)
        self.jsd_threshold = float(jsd_threshold)
        self.mmd_permutations = int(mmd_permutations)
        self.mmd_max_samples = int(mmd_max_samples)
        self.pca_variance = float(pca_variance)
        self.seed = int(seed)
        self.workers = int(workers) if workers else min(8, os.cpu_count() or 1)
        self.feature_names: list[str] = []
        self.categorical: frozenset[str] = frozenset()
        self._num: dict[str, _Numeric] = {}
        self._cat: dict[str, _Categorical] = {}
        self._pca: dict[str, np.ndarray] | None = None
        self._n_reference = 0
        self._fitted = False

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, reference: Any, feature_names: list[str] | None = None,
            categorical: Iterable[str] = ()) -> DriftSuite:
        """Learn the reference. DataFrame columns with a non-numeric dtype are categorical automatically."""
        names, columns, cats = _columns(reference, feature_names, set(categorical), what="reference")
        if not columns or len(columns[0]) == 0:
            raise InvalidInput("reference has no rows")
        self.feature_names = names
        self.categorical = frozenset(cats)
        self._num, self._cat = {}, {}
        self._n_reference = len(columns[0])
        numeric = [(name, col) for name, col in zip(names, columns) if name not in cats]
        for name, col in zip(names, columns):
            if name in cats:
                self._cat[name] = _fit_categorical(name, col)
        workers = min(self.workers, len(numeric)) if self._n_reference * len(numeric) >= 1_000_000 else 1
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                fitted = list(pool.map(lambda nc: self._fit_numeric(*nc), numeric))
        else:
            fitted = [self._fit_numeric(name, col) for name, col in numeric]
        # keep the column order of the data
        by = dict(zip([n for n, _ in numeric], fitted))
        for name in names:
            if name in by:
                self._num[name] = by[name]
        if any(t in P_VALUE_TESTS for t in self.tests):
            from scipy import stats  # noqa: F401  (imported here, at fit time, not in the timed compare)
        self._pca = None
        if "pca" in self.tests and self._num:
            self._pca = self._fit_pca(np.column_stack([np.asarray(c, dtype=float) for n, c in
                                                       zip(names, columns) if n not in cats]))
        self._fitted = True
        return self

    def _fit_numeric(self, name: str, col: Any) -> _Numeric:
        x = _as_float(col, name, "reference")
        fin = np.isfinite(x)
        x = np.sort(x if fin.all() else x[fin])
        if len(x) == 0:
            raise InvalidInput(f"reference feature {name!r} has no finite values")
        n = len(x)
        q = x[np.minimum(n - 1, (np.arange(1, self.psi_bins) * n) // self.psi_bins)]
        edges = np.unique(np.concatenate([[np.nextafter(x[0], -np.inf)], q]))
        props = _bin_props(edges, x)
        std = float(np.std(x))
        return _Numeric(x, _KsGrid.fit(x), edges, props, std)

    def _fit_pca(self, ref: np.ndarray) -> dict[str, np.ndarray]:
        ref = ref[np.isfinite(ref).all(axis=1)]
        if len(ref) < 4:
            raise InvalidInput("the pca test needs at least 4 complete reference rows")
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(len(ref))
        fit_rows, hold_rows = ref[perm[: len(ref) // 2]], ref[perm[len(ref) // 2:]]
        mean = fit_rows.mean(axis=0)
        std = fit_rows.std(axis=0)
        std[std == 0] = 1.0
        z = (fit_rows - mean) / std
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        var = s**2 / max(1.0, (s**2).sum())
        k = int(np.searchsorted(np.cumsum(var), self.pca_variance) + 1)
        k = min(k, max(1, z.shape[1] - 1)) if z.shape[1] > 1 else 1
        comp = vt[:k]
        state = {"mean": mean, "std": std, "comp": comp}
        state["ref_err"] = np.sort(_pca_error(hold_rows, state))
        return state

    # -- compare ---------------------------------------------------------------------------------
    def compare(self, current: Any) -> DriftReport:
        """Test current data (same columns as the reference) and return the report."""
        if not self._fitted:
            raise InvalidInput("DriftSuite.compare called before fit")
        if isinstance(current, np.ndarray) and not self.categorical and current.dtype.kind in "fiub" \
                and current.ndim == 2 and current.shape[1] == len(self.feature_names):
            # fast path: column views of the caller's array, nothing copied up front
            arr = current if current.dtype == np.float64 else current.astype(float)
            names, columns = list(self.feature_names), [arr[:, j] for j in range(arr.shape[1])]
        else:
            names, columns, _ = _columns(current, None if _is_frame(current) else self.feature_names,
                                         set(self.categorical), what="current", expected=self.feature_names)
        m = len(columns[0]) if columns else 0
        if m == 0:
            raise InvalidInput("current data has no rows")
        by_name = dict(zip(names, columns))
        rows: list[tuple[str, str, float, float | None, bool | None]] = []   # drift None = decided by p
        missing: dict[str, int] = {}
        num_names = [n for n in self.feature_names if n in self._num]
        num_tests = [t for t in self.tests if t in NUMERIC_TESTS]
        cat_tests = [t for t in self.tests if t in CATEGORICAL_TESTS] or ["chi2"]
        results: dict[tuple[str, str], tuple[float, float | None, bool | None]] = {}
        if num_names and num_tests:
            keep = any(t != "ks" for t in num_tests)
            finite = self._numeric_columns(num_names, by_name, m, "ks" in num_tests, keep)
            counts = [k for _, k, _ in finite]
            for n, k in zip(num_names, counts):
                if k < m:
                    missing[n] = m - k
            if "ks" in num_tests:
                for (n, ks_stat, ks_p) in self._ks(num_names, counts, [d for _, _, d in finite],
                                                   [c for c, _, _ in finite]):
                    results[(n, "ks")] = (ks_stat, ks_p, None)
            for n, (c, k, _) in zip(num_names, finite):
                ref = self._num[n]
                if "psi" in num_tests:
                    results[(n, "psi")] = _threshold(_psi(ref.ref_props, _bin_props(ref.edges, c)),
                                                     self.psi_threshold, k)
                if "jsd" in num_tests:
                    results[(n, "jsd")] = _threshold(_jsd(ref.ref_props, _bin_props(ref.edges, c)),
                                                     self.jsd_threshold, k)
                if "wasserstein" in num_tests:
                    results[(n, "wasserstein")] = _threshold(_wasserstein(ref.sorted_ref, c, ref.std),
                                                             self.wasserstein_threshold, k)
            if "mmd" in num_tests:
                from detectors._mmd import mmd_permutation_test

                rng = np.random.default_rng(self.seed)
                for n, (c, _, _) in zip(num_names, finite):
                    if len(c) == 0:
                        results[(n, "mmd")] = (0.0, 1.0, None)
                        continue
                    # sorted, so that the seeded subsample does not depend on the row order
                    stat, p = mmd_permutation_test(self._num[n].sorted_ref, np.sort(c), self.mmd_permutations,
                                                   self.mmd_max_samples, rng)
                    results[(n, "mmd")] = (stat, p, None)
        for n in self.feature_names:
            if n not in self._cat:
                continue
            fc = self._cat[n]
            cur_counts, n_missing = _count_categories(fc, by_name[n])
            if n_missing:
                missing[n] = n_missing
            for t in cat_tests:
                if t == "chi2":
                    results[(n, t)] = (*_chi2(fc.ref_counts, cur_counts), None)
                else:
                    rp = _props(fc.ref_counts)
                    cp = _props(cur_counts)
                    val = _psi(rp, cp) if t == "psi" else _jsd(rp, cp)
                    thr = self.psi_threshold if t == "psi" else self.jsd_threshold
                    results[(n, t)] = _threshold(val, thr, int(cur_counts.sum()))
        for n in self.feature_names:
            tests = num_tests if n in self._num else cat_tests
            for t in tests:
                if (n, t) in results:
                    rows.append((n, t, *results[(n, t)]))
        if self._pca is not None:
            mat = np.column_stack([_as_float(by_name[n], n, "current") for n in num_names])
            err = np.sort(_pca_error(mat[np.isfinite(mat).all(axis=1)], self._pca))
            pca_stat, pca_p = _ks_pair(self._pca["ref_err"], err) if len(err) else (0.0, 1.0)
            rows.append((MULTIVARIATE_NAME, "pca", pca_stat, pca_p, None))
        adjusted = _adjust([r[3] for r in rows], self.correction)
        feats = []
        for (n, t, row_stat, row_p, row_drift), adj in zip(rows, adjusted):
            drift = bool(row_drift) if row_p is None else bool(adj is not None and adj < self.alpha)
            feats.append(FeatureDrift(n, t, float(row_stat), None if row_p is None else float(row_p), drift))
        return DriftReport(drift=any(f.drift for f in feats), features=tuple(feats), alpha=self.alpha,
                           correction=self.correction, adjusted_p_values=tuple(adjusted),
                           n_reference=self._n_reference, n_current=m, missing=missing)

    def _numeric_columns(self, names: list[str], by_name: dict[str, Any], m: int, with_ks: bool,
                         keep: bool) -> list[tuple[np.ndarray, int, float | None]]:
        """Per numeric feature: its finite current values (unsorted; empty unless ``keep`` or the KS test
        will compute an exact p-value from them), their count and
        the KS statistic (None where the exact path computes it). Columns run on several threads for big inputs (numpy releases the GIL)."""
        empty = np.empty(0)

        def work(i: int) -> tuple[np.ndarray, int, float | None]:
            name = names[i]
            c = _as_float(by_name[name], name, "current")      # may be a strided column view
            with np.errstate(over="ignore", invalid="ignore"):
                total = c.sum()
            if not math.isfinite(total):                        # cheap: any NaN or inf makes the sum so
                c = c[np.isfinite(c)]
            small = with_ks and max(len(c), len(self._num[name].sorted_ref)) <= _KS_MAX_AUTO_N
            d = _ks_stat_grid(self._num[name], c) if with_ks and len(c) and not small else None
            return (np.ascontiguousarray(c) if keep or small else empty), len(c), d

        workers = min(self.workers, len(names)) if m * len(names) >= 1_000_000 else 1
        if workers <= 1:
            return [work(i) for i in range(len(names))]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(work, range(len(names))))

    def _ks(self, names: list[str], counts: list[int], ks_stats: list[float | None],
            values: list[np.ndarray]) -> list[tuple[str, float, float]]:
        """(name, statistic, p-value) per feature; ``values`` are the finite current values, needed (and
        kept) only for samples small enough for scipy's exact p-value."""
        out: list[tuple[str, float, float]] = []
        asymp_idx, asymp_d, asymp_en = [], [], []
        for n, m, d in zip(names, counts, ks_stats):
            if m == 0:
                out.append((n, 0.0, 1.0))
                continue
            n1 = len(self._num[n].sorted_ref)
            if max(n1, m) <= _KS_MAX_AUTO_N:
                out.append((n, *_ks_small(self._num[n].sorted_ref, values[len(out)])))
                continue
            assert d is not None, "the KS statistic is computed for every non-empty big sample"
            big, small = sorted([float(n1), float(m)], reverse=True)
            asymp_idx.append(len(out))
            asymp_d.append(d)
            asymp_en.append(np.round(big * small / (big + small)))
            out.append((n, d, math.nan))
        if asymp_idx:
            ps = _kstwo_sf(np.asarray(asymp_d), np.asarray(asymp_en))
            for j, p in zip(asymp_idx, np.atleast_1d(ps)):
                out[j] = (out[j][0], out[j][1], float(p))
        return out


# -- KS --------------------------------------------------------------------------------------------
def _ks_stat(ref: np.ndarray, cur: np.ndarray) -> float:
    """Two-sided KS statistic from two sorted samples, computed exactly as scipy does (same divisions).

    The maximum of F_ref - F_cur is reached at reference points and the minimum at current points
    (right-continuous ECDFs). One binary search of the current points into the cached reference gives
    both: ``right`` counts for the current points directly, and, through a histogram of the ``left``
    counts, how many current points lie at or below each reference point.
    """
    n, m = len(ref), len(cur)
    right = np.searchsorted(ref, cur, side="right")
    left = right.copy()
    tied = right > 0
    tied[tied] = ref[right[tied] - 1] == cur[tied]
    if tied.any():
        left[tied] = np.searchsorted(ref, cur[tied], side="left")
    # cur_j <= ref_i  <=>  left_j <= i
    cur_at_ref = np.cumsum(np.bincount(left, minlength=n + 1)[:n])
    max_s = float(np.max(np.arange(1, n + 1) / n - cur_at_ref / m))
    min_s = float(np.min(right / n - np.arange(1, m + 1) / m))
    min_s = min(max(-min_s, 0.0), 1.0)
    return max(max_s, min_s)


def _ks_stat_grid(ref: _Numeric, cur: np.ndarray) -> float:
    """The KS statistic of the sorted reference against unsorted current values, equal to ``_ks_stat``.

    Per grid bucket, counts give F_ref - F_cur exactly just after the bucket's last value (a value the
    statistic is taken over) and bound it inside the bucket. Only buckets whose bound beats the best
    exact value are refined: their current values are sorted and compared with the reference values
    of the same buckets, as ``_ks_stat`` does for everything. On ordinary data that is a few hundred
    values, so the O(m log m) sort of the whole sample, which dominated, is gone.
    """
    grid, sref = ref.grid, ref.sorted_ref
    n, m, size = len(sref), len(cur), grid.size
    if 4 * m < size:
        return _ks_stat(sref, np.sort(cur))
    b = grid.bucket(cur)
    per_bucket = np.bincount(b, minlength=size)
    below = np.zeros(size + 1, dtype=np.int64)          # current values in buckets < b
    np.cumsum(per_bucket, out=below[1:])
    ref_cdf, cur_cdf = grid.ref_cdf, below / m
    diff = ref_cdf - cur_cdf                           # F_ref - F_cur after each bucket (and 0 before)
    best = max(float(diff.max()), -float(diff.min()))
    # F_ref - F_cur inside bucket b lies in [ref_cdf[b] - cur_cdf[b+1], ref_cdf[b+1] - cur_cdf[b]]
    refine = (ref_cdf[1:] - cur_cdf[:-1] > best) | (ref_cdf[:-1] - cur_cdf[1:] < -best)
    if not refine.any():
        return best
    picked = refine[b]
    k = int(np.count_nonzero(picked))
    if 2 * k > m:                                       # the grid does not separate these samples
        return _ks_stat(sref, np.sort(cur))
    xs = np.sort(cur[picked])
    picked_below = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.where(refine, per_bucket, 0), out=picked_below[1:])
    offset = below - picked_below                       # current values before bucket b that were not picked
    if k:
        # F_cur - F_ref at the picked current values (the last of equal values has the exact count)
        rank = np.arange(1, k + 1) + offset[grid.bucket(xs)]
        right = np.searchsorted(sref, xs, side="right")
        best = max(best, -float(np.min(right / n - rank / m)))
    # F_ref - F_cur at the reference values of the refined buckets (the last of equal values is exact)
    starts, ends = grid.ref_below[:-1][refine], grid.ref_below[1:][refine]
    lengths = ends - starts
    if lengths.sum():
        idx = np.arange(lengths.sum()) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        left = np.searchsorted(sref, xs, side="left")   # cur_j <= ref_i  <=>  left_j <= i
        cur_le = np.repeat(offset[:-1][refine], lengths) + np.searchsorted(left, idx, side="right")
        best = max(best, float(np.max((idx + 1) / n - cur_le / m)))
    return best


def _ks_small(ref_sorted: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Statistic and p-value of ``scipy.stats.ks_2samp`` (``method='auto'``) for samples of at most
    ``_KS_MAX_AUTO_N`` values: the exact p-value (scipy's lattice-path count), or the asymptotic one
    where scipy's exact computation does not succeed."""
    from scipy import stats

    res = stats.ks_2samp(ref_sorted, cur, method="auto")
    return float(res.statistic), float(np.clip(res.pvalue, 0.0, 1.0))


def _ks_pair(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    n1, m = len(ref_sorted), len(cur_sorted)
    if max(n1, m) <= _KS_MAX_AUTO_N:
        return _ks_small(ref_sorted, cur_sorted)
    d = _ks_stat(ref_sorted, cur_sorted)
    big, small = sorted([float(n1), float(m)], reverse=True)
    return d, float(_kstwo_sf(np.array([d]), np.array([np.round(big * small / (big + small))]))[0])


def _kstwo_sf(d: np.ndarray, en: np.ndarray) -> np.ndarray:
    """``scipy.stats.kstwo.sf(d, en)`` (ks_2samp's asymptotic p-value), with scipy's slow branch vectorized.

    For ``n * d**2`` in [2.2, 370) (and for ``d >= 0.5``) scipy returns ``2 * scipy.special.smirnov(n, d)``,
    Smirnov's exact sum of ``n (1 - d)`` terms evaluated in a scalar C loop: about 85 ms at n = 50,000 and
    ten times that at 500,000, paid by every clearly drifted feature of a big sample. The same sum in log
    space with numpy costs a few milliseconds and agrees with scipy to about 1e-10 relative (n up to
    250,000 checked); every other case is left to scipy.
    """
    from scipy import stats

    d = np.asarray(d, dtype=float)
    en = np.asarray(en, dtype=float)
    t = en * d
    nxsquared = t * d
    # the conditions under which scipy's _kolmogn (n > 140, two-sided sf) evaluates 2 * smirnov(n, d)
    smirnov = (en > 140) & (t > 1.0) & (t < en - 1) & (d < 1.0) & (
        (d >= 0.5) | ((nxsquared >= 2.2) & (nxsquared < 370.0)))
    out = np.empty(len(d))
    if (~smirnov).any():
        out[~smirnov] = stats.kstwo.sf(d[~smirnov], en[~smirnov])
    log_fact: dict[int, np.ndarray] = {}   # log(k!) for k = 0..n, shared by the features of one compare
    for i in np.flatnonzero(smirnov):
        n = int(en[i])
        if n not in log_fact:
            from scipy.special import gammaln

            log_fact[n] = gammaln(np.arange(1.0, n + 2.0))
        out[i] = 2.0 * _smirnov_sf(n, float(d[i]), log_fact[n])
    return np.clip(out, 0.0, 1.0)


def _smirnov_sf(n: int, d: float, log_fact: np.ndarray) -> float:
    """P(D+_n >= d), Smirnov's exact sum over v <= n(1 - d) of C(n, v) d (d + v/n)^(v-1) (1 - d - v/n)^(n-v).

    All terms are positive, so the sum itself has no cancellation; the log-factorials (magnitude up to
    n log n) set the rounding error, about 1e-10 relative at n = 10^5.
    """
    nn = int(math.floor(n * (1.0 - d)))
    v = np.arange(nn + 1, dtype=float)
    evn = np.minimum(d + v / n, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_terms = (v - 1.0) * np.log(evn) + (n - v) * np.log1p(-evn)
    log_terms += log_fact[n] - log_fact[: nn + 1] - log_fact[n - nn:][::-1]
    top = float(log_terms.max())
    if top == -math.inf:
        return 0.0
    return math.exp(top + math.log(float(np.exp(log_terms - top).sum())) + math.log(d))


# -- threshold tests -------------------------------------------------------------------------------
def _bin_props(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(len(edges) + 1)
    idx = np.searchsorted(edges, x, side="left")
    return np.bincount(idx, minlength=len(edges) + 1) / len(x)


def _props(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(len(counts))


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    if cur.sum() == 0:
        return 0.0
    r = np.clip(ref, _PSI_EPS, None)
    c = np.clip(cur, _PSI_EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _jsd(ref: np.ndarray, cur: np.ndarray) -> float:
    if cur.sum() == 0:
        return 0.0
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(ref, cur, base=2.0))


def _wasserstein(ref_sorted: np.ndarray, cur: np.ndarray, std: float) -> float:
    if len(cur) == 0:
        return 0.0
    from scipy import stats

    w = float(stats.wasserstein_distance(ref_sorted, cur))
    # a constant reference has no spread: report the raw distance (0 when current is the same constant)
    return w / std if std > 0 else w


def _threshold(value: float, threshold: float, n: int) -> tuple[float, None, bool]:
    value = float(min(value, 1e12))
    return value, None, bool(n > 0 and value >= threshold)


# -- categorical -----------------------------------------------------------------------------------
def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fit_categorical(name: str, col: Any) -> _Categorical:
    vals = [v for v in _to_list(col) if not _is_missing(v)]
    if not vals:
        raise InvalidInput(f"reference feature {name!r} has no non-missing values")
    cats: dict[Any, int] = {}
    for v in vals:
        cats[v] = cats.get(v, 0) + 1
    categories = sorted(cats, key=lambda c: (str(type(c)), str(c)))
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1)
    for c, k in cats.items():
        counts[index[c]] = k
    return _Categorical(categories, index, counts)


def _count_categories(fc: _Categorical, col: Any) -> tuple[np.ndarray, int]:
    counts = np.zeros(len(fc.categories) + 1)
    unseen = len(fc.categories)
    missing = 0
    for v in _to_list(col):
        if _is_missing(v):
            missing += 1
            continue
        counts[fc.index.get(v, unseen)] += 1
    return counts, missing


def _chi2(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or cur_counts.sum() == 0:
        return 0.0, 1.0
    res = stats.chi2_contingency(table)
    return float(res.statistic), float(res.pvalue)


# -- multivariate ----------------------------------------------------------------------------------
def _pca_error(rows: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    z = (rows - state["mean"]) / state["std"]
    recon = (z @ state["comp"].T) @ state["comp"]
    return np.asarray(np.sqrt(((z - recon) ** 2).mean(axis=1)), dtype=float)


# -- correction ------------------------------------------------------------------------------------
def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (step-up, monotone, capped at 1), in the input order.

    ``scipy.stats.false_discovery_control(p, method="bh")``; an empty input gives an empty array.
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=float)
    if len(p) == 0:
        return p
    return np.asarray(false_discovery_control(p, method="bh"), dtype=float)


def _adjust(p_values: list[float | None], correction: str) -> list[float | None]:
    idx = [i for i, p in enumerate(p_values) if p is not None]
    ps = np.array([p_values[i] for i in idx], dtype=float)
    if correction == "fdr_bh":
        adj = benjamini_hochberg(ps)
    elif correction == "bonferroni":
        adj = np.minimum(ps * len(ps), 1.0)
    else:
        adj = ps
    out: list[float | None] = [None] * len(p_values)
    for i, a in zip(idx, adj):
        out[i] = float(a)
    return out


# -- input handling --------------------------------------------------------------------------------
def _is_frame(obj: Any) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "dtypes")


def _to_list(col: Any) -> list[Any]:
    if hasattr(col, "tolist"):
        return list(col.tolist())
    return list(col)


def _as_float(col: Any, name: str, what: str) -> np.ndarray:
    try:
        return np.asarray(col, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} feature {name!r} is not numeric; declare it categorical") from None


def _columns(data: Any, names: list[str] | None, categorical: set[str], what: str,
             expected: list[str] | None = None) -> tuple[list[str], list[Any], set[str]]:
    if _is_frame(data):
        cols = [str(c) for c in data.columns]
        if expected is not None:
            missing = [c for c in expected if c not in cols]
            if missing:
                raise InvalidInput(f"{what} data lacks column(s) {missing}")
            cols = list(expected)
        elif names is not None and list(names) != cols:
            raise InvalidInput(f"feature_names {names} do not match the {what} columns {cols}")
        cats = set(categorical)
        import pandas as pd

        for c in cols:
            s = data[c]
            if not (pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)):
                cats.add(c)
        unknown = cats - set(cols)
        if unknown:
            raise InvalidInput(f"categorical column(s) {sorted(unknown)} not in the {what} data")
        out = []
        for c in cols:
            s = data[c]
            out.append(s.to_numpy(dtype=float, na_value=np.nan) if c not in cats else s.astype(object).where(
                s.notna(), None).to_numpy())
        return cols, out, cats
    arr = np.asarray(data) if not isinstance(data, np.ndarray) else data
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise InvalidInput(f"{what} data must be 2-dimensional (rows x features), got shape {arr.shape}")
    d = arr.shape[1]
    if names is None:
        names = [f"f{i}" for i in range(d)]
    if len(names) != d:
        raise InvalidInput(f"{what} data has {d} columns but {len(names)} feature names were given")
    if len(set(names)) != len(names):
        raise InvalidInput("feature names must be unique")
    unknown = set(categorical) - set(names)
    if unknown:
        raise InvalidInput(f"categorical feature(s) {sorted(unknown)} not among the feature names")
    if arr.dtype.kind in "fiub" and not categorical:
        # one transposed copy: every column becomes a contiguous row (fast to sort and search)
        block = np.array(arr.T, dtype=float, order="C")
        columns: list[Any] = list(block)
    else:
        columns = [arr[:, i] for i in range(d)]
    return list(names), columns, set(categorical)


class SlidingWindowDrift:
    """A fixed reference (one ``DriftSuite`` fit) against a sliding window of the most recent rows.

    Memory is bounded: at most ``window`` current rows are kept (numeric features only).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> suite = DriftSuite(tests=("ks",)).fit(rng.normal(size=(2000, 2)))
    >>> sw = SlidingWindowDrift(suite, window=500)
    >>> sw.add(rng.normal(size=(800, 2)))
    >>> sw.compare().drift
    False
    >>> sw.add(rng.normal(size=(500, 2)) + [0.0, 1.0])
    >>> sw.compare().drifted_features
    ['f1']
    """

    def __init__(self, suite: DriftSuite, window: int = 1000, min_rows: int = 30) -> None:
        if window < 1 or min_rows < 1:
            raise InvalidInput("window and min_rows must be >= 1")
        if suite.categorical:
            raise InvalidInput("SlidingWindowDrift keeps numeric rows only; the suite has categorical features")
        self.suite = suite
        self.window = int(window)
        self.min_rows = int(min_rows)
        self._buf = np.empty((self.window, len(suite.feature_names)))
        self._n = 0           # rows ever added
        self._filled = 0

    def add(self, rows: Any) -> None:
        """Append current rows (n, d); only the last ``window`` rows are kept."""
        x = np.asarray(rows, dtype=float)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self._buf.shape[1]:
            raise InvalidInput(f"rows must have {self._buf.shape[1]} columns, got shape {x.shape}")
        x = x[-self.window:]
        k = len(x)
        start = self._n % self.window
        first = min(k, self.window - start)
        self._buf[start: start + first] = x[:first]
        if k > first:
            self._buf[: k - first] = x[first:]
        self._n += k
        self._filled = min(self.window, self._filled + k)

    def compare(self) -> DriftReport:
        """The suite's report on the current window (InvalidInput before ``min_rows`` rows arrived)."""
        if self._filled < self.min_rows:
            raise InvalidInput(f"sliding window has {self._filled} rows; need at least {self.min_rows}")
        if self._filled < self.window:
            rows = self._buf[: self._filled]
        else:
            start = self._n % self.window
            rows = np.concatenate([self._buf[start:], self._buf[:start]])
        return self.suite.compare(rows)
