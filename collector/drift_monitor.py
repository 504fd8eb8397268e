"""Input and prediction drift of the recent window against the running version's reference set.

The statistics are ``detectors.drift.DriftSuite``'s; this module only keeps one fitted suite per model
version, picks the rows to compare and turns the report into exposable numbers (finite only).

    >>> mon = DriftMonitor(min_rows=100)
    >>> mon.fit(reference)                         # once per version (GET /reference)
    >>> result = mon.compare("v1", window_inputs, window_predictions)
    >>> result.detected, result.drifted_features, result.prediction_psi
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.types import Reference

log = logging.getLogger(__name__)

PREDICTION = "prediction"
SCALE_FACTOR = 10.0      # a value this many times the reference's largest magnitude is in another unit
MAX_CODES = 32           # a feature whose reference holds at most this many integer values is a code
MIN_SHARE = 0.05         # share of a feature's window values that must be affected to flag it
KNOWN_MIX_PSI = 1.0      # known codes keeping their mix (PSI below this) = new categories, not a shift


@dataclass(frozen=True, slots=True)
class FeatureDriftSignal:
    feature: str
    test: str  # "ks" | "psi"
    statistic: float
    p_value: float | None  # KS only
    drift: bool


@dataclass(frozen=True, slots=True)
class DriftResult:
    version: str
    rows: int  # window rows compared
    features: tuple[FeatureDriftSignal, ...]
    drifted_features: tuple[str, ...]
    detected: bool
    prediction_psi: float | None
    # Schema checks, deterministic (no test): features arriving in another unit (values >= SCALE_FACTOR x
    # the reference's largest magnitude), and code-like features carrying codes the reference never had
    # while the known codes keep their mix (a shift of the whole distribution is covariate drift instead).
    unit_change_features: tuple[str, ...] = ()
    unseen_category_features: tuple[str, ...] = ()


@dataclass(slots=True)
class _Support:
    abs_max: np.ndarray                       # per feature, finite reference values
    codes: list[np.ndarray | None]            # sorted codes of code-like features, else None
    code_props: list[np.ndarray | None]       # their reference proportions

    @classmethod
    def of(cls, ref: np.ndarray) -> _Support:
        finite = np.where(np.isfinite(ref), ref, np.nan)
        with np.errstate(all="ignore"):
            abs_max = np.nan_to_num(np.nanmax(np.abs(finite), axis=0), nan=0.0) if ref.size else np.zeros(0)
        codes: list[np.ndarray | None] = []
        props: list[np.ndarray | None] = []
        for j in range(ref.shape[1]):
            col = ref[:, j][np.isfinite(ref[:, j])]
            values, counts = np.unique(col, return_counts=True)
            if col.size and values.size <= MAX_CODES and np.all(values == np.round(values)):
                codes.append(values)
                props.append(counts / counts.sum())
            else:
                codes.append(None)
                props.append(None)
        return cls(abs_max, codes, props)

    def check(self, x: np.ndarray, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        units: list[str] = []
        candidates: dict[int, np.ndarray] = {}          # feature -> mask of its known-code values
        unseen_rows = np.zeros(len(x), dtype=bool)       # rows carrying a new code in some feature
        for j, name in enumerate(names):
            col = x[:, j]
            finite = np.isfinite(col)
            if finite.sum() < 20:
                continue
            top = self.abs_max[j]
            if top > 0 and np.mean(np.abs(col[finite]) > SCALE_FACTOR * top) >= MIN_SHARE:
                units.append(name)
                continue
            codes = self.codes[j]
            if codes is None:
                continue
            known = np.isin(col, codes)
            new = finite & ~known
            if new.sum() < MIN_SHARE * finite.sum() or not known.any():
                continue
            candidates[j] = known
            unseen_rows |= new
        unseen: list[str] = []
        moved: list[str] = []
        for j, known in candidates.items():
            # The known codes of the rows that carry new codes tell a shift (they moved too) from new
            # categories (they did not); with too few such values, the whole window's known codes decide
            # (then a shift only shows once enough shifted rows filled the window).
            on_rows = known & unseen_rows
            values = x[on_rows, j] if on_rows.sum() >= 8 else x[known, j]
            (unseen if self._known_mix_psi(j, values) < KNOWN_MIX_PSI else moved).append(names[j])
        # A shift carries values past the reference's range *and* moves the known codes; on a feature
        # that sat near the top of its range only the first shows. When any feature of the window moved
        # with its new codes, the new codes elsewhere are most likely the same shift: covariate drift.
        return tuple(units), (() if moved else tuple(unseen))

    def _known_mix_psi(self, j: int, values: np.ndarray) -> float:
        codes, ref_props = self.codes[j], self.code_props[j]
        assert codes is not None and ref_props is not None
        cur_props = np.bincount(np.searchsorted(codes, values), minlength=codes.size) / len(values)
        p, q = np.clip(ref_props, 1e-4, None), np.clip(cur_props, 1e-4, None)
        return float(np.sum((q - p) * np.log(q / p)))


@dataclass(slots=True)
class _Fitted:
    suite: Any
    feature_names: tuple[str, ...]
    prediction_suite: Any | None  # PSI over the predicted class, categorical
    support: _Support | None = None


class DriftMonitor:
    """One fitted DriftSuite per model version (bounded cache); compares windows of complete rows."""

    def __init__(
        self,
        tests: tuple[str, ...] = ("ks", "psi"),
        alpha: float = 0.01,
        correction: str = "fdr_bh",
        min_rows: int = 200,
        max_versions: int = 4,
        psi_threshold: float = 0.2,
    ) -> None:
        self.tests = tuple(tests)
        self.alpha = float(alpha)
        self.psi_threshold = float(psi_threshold)
        self.correction = correction
        self.min_rows = int(min_rows)
        self.max_versions = int(max_versions)
        self._fitted: OrderedDict[str, _Fitted] = OrderedDict()

    def has(self, version: str) -> bool:
        return version in self._fitted

    def width(self, version: str) -> int | None:
        f = self._fitted.get(version)
        return None if f is None else len(f.feature_names)

    def fit(self, reference: Reference) -> None:
        """Fit the drift tests on ``reference`` (raises detectors' InvalidInput on a bad reference)."""
        from detectors.drift import DriftSuite

        suite = DriftSuite(
            tests=self.tests, alpha=self.alpha, correction=self.correction, psi_threshold=self.psi_threshold
        )
        suite.fit(np.asarray(reference.inputs, dtype=float), list(reference.feature_names))
        pred_suite = None
        preds = np.asarray(reference.predictions, dtype=int)
        if preds.size:
            pred_suite = DriftSuite(tests=("psi",), alpha=self.alpha, correction="none")
            pred_suite.fit(preds.astype(object).reshape(-1, 1), [PREDICTION], categorical=[PREDICTION])
        ref = np.asarray(reference.inputs, dtype=float)
        support = _Support.of(ref) if ref.ndim == 2 else None
        self._fitted[reference.version] = _Fitted(suite, tuple(reference.feature_names), pred_suite, support)
        self._fitted.move_to_end(reference.version)
        while len(self._fitted) > self.max_versions:
            self._fitted.popitem(last=False)

    def compare(self, version: str, inputs: np.ndarray, predictions: np.ndarray) -> DriftResult | None:
        """Drift of the window; None without a fitted reference or with fewer than ``min_rows`` rows.

        Null inputs (NaN) are ignored per feature by the tests; the missing share is its own signal.
        """
        fitted = self._fitted.get(version)
        if fitted is None:
            return None
        x = np.asarray(inputs, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(fitted.feature_names):
            return None
        if x.shape[0] < self.min_rows:
            return None
        report = fitted.suite.compare(x)
        features = []
        for f in report.features:
            stat = float(f.statistic)
            if not math.isfinite(stat):
                continue
            p = getattr(f, "p_value", None)
            p = float(p) if p is not None and math.isfinite(float(p)) else None
            test = str(getattr(f.test, "value", f.test))
            features.append(FeatureDriftSignal(str(f.name), test, stat, p, bool(f.drift)))
        preds = np.asarray(predictions, dtype=int)
        psi = None
        if fitted.prediction_suite is not None and preds.size >= self.min_rows:
            pred_report = fitted.prediction_suite.compare(preds.astype(object).reshape(-1, 1))
            psi = float(pred_report.features[0].statistic)
            psi = psi if math.isfinite(psi) else None
        units, unseen = fitted.support.check(x, fitted.feature_names) if fitted.support else ((), ())
        return DriftResult(
            version=version,
            rows=int(x.shape[0]),
            features=tuple(features),
            drifted_features=tuple(str(n) for n in report.drifted_features),
            detected=bool(report.drift),
            prediction_psi=psi,
            unit_change_features=units,
            unseen_category_features=unseen,
        )
