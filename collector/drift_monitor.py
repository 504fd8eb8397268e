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

from collector.scrape import Reference

log = logging.getLogger(__name__)

PREDICTION = "prediction"


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


@dataclass(slots=True)
class _Fitted:
    suite: Any
    feature_names: tuple[str, ...]
    prediction_suite: Any | None  # PSI over the predicted class, categorical


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
        self._fitted[reference.version] = _Fitted(suite, tuple(reference.feature_names), pred_suite)
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
        return DriftResult(
            version=version,
            rows=int(x.shape[0]),
            features=tuple(features),
            drifted_features=tuple(str(n) for n in report.drifted_features),
            detected=bool(report.drift),
            prediction_psi=psi,
        )
