"""Bounded windows over the model server's prediction and label logs, and the signals computed from them.

Everything here is pure: records and timestamps go in, numbers come out; no clock or network.

    >>> w = PredictionWindow(max_rows=1000, max_age_seconds=60)
    >>> w.extend([PredictionRecord.from_json(r) for r in payload["records"]])
    >>> w.prune(now=time.time()); w.stats("v1").latency_quantiles
    {0.5: 0.004, 0.9: 0.007, 0.99: 0.012}
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


def _float(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One row of ``GET /predictions``; ``inputs`` holds NaN where the request sent null."""

    request_id: str
    ts: float
    version: str
    inputs: np.ndarray
    prediction: int | None
    finite: bool
    latency_seconds: float
    error: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PredictionRecord:
        raw = d.get("inputs") or []
        inputs = np.array([math.nan if v is None else _float(v) for v in raw], dtype=float)
        pred = d.get("prediction")
        return cls(
            request_id=str(d["request_id"]),
            ts=_float(d.get("ts"), 0.0),
            version=str(d.get("version") or ""),
            inputs=inputs,
            prediction=None if pred is None else int(pred),
            finite=bool(d.get("finite", True)),
            latency_seconds=_float(d.get("latency_seconds")),
            error=d.get("error") or None,
        )


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """One row of ``GET /feedback``."""

    request_id: str
    label: int
    ts: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LabelRecord:
        return cls(request_id=str(d["request_id"]), label=int(d["label"]), ts=_float(d.get("ts"), 0.0))


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Signals of the recent window of one version."""

    rows: int
    latency_quantiles: dict[float, float] = field(default_factory=dict)
    nonfinite_ratio: float | None = None
    input_missing_ratio: float | None = None
    rows_per_second: float | None = None


def latency_quantiles(
    latencies: Sequence[float] | np.ndarray, quantiles: Sequence[float] = QUANTILES
) -> dict[float, float]:
    """Empirical quantiles of the finite latencies; empty when there are none."""
    arr = np.asarray(latencies, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {}
    values = np.quantile(arr, list(quantiles))
    return {float(q): float(v) for q, v in zip(quantiles, values, strict=True)}


class PredictionWindow:
    """The most recent predictions, bounded by count and by age."""

    def __init__(self, max_rows: int = 2000, max_age_seconds: float = 120.0) -> None:
        self.max_rows = int(max_rows)
        self.max_age_seconds = float(max_age_seconds)
        self._rows: deque[PredictionRecord] = deque(maxlen=self.max_rows)

    def __len__(self) -> int:
        return len(self._rows)

    def extend(self, records: Iterable[PredictionRecord]) -> None:
        self._rows.extend(records)

    def clear(self) -> None:
        self._rows.clear()

    def drop_other_versions(self, version: str) -> None:
        """After a version change the old version's rows must not pollute the new one."""
        keep = [r for r in self._rows if r.version == version]
        self._rows.clear()
        self._rows.extend(keep)

    def prune(self, now: float) -> None:
        cutoff = now - self.max_age_seconds
        while self._rows and self._rows[0].ts < cutoff:
            self._rows.popleft()

    def records(self, version: str | None = None) -> list[PredictionRecord]:
        return [r for r in self._rows if version is None or r.version == version]

    def stats(self, version: str | None = None) -> WindowStats:
        rows = self.records(version)
        return window_stats(rows)

    def inputs(self, version: str | None, width: int) -> np.ndarray:
        """Rows x ``width`` inputs of ``version`` (NaN = null); rows of another width are skipped."""
        rows = [r.inputs for r in self.records(version) if r.inputs.shape == (width,)]
        return np.vstack(rows) if rows else np.empty((0, width))

    def predictions(self, version: str | None) -> np.ndarray:
        return np.array([r.prediction for r in self.records(version) if r.prediction is not None], dtype=int)


def window_stats(rows: Sequence[PredictionRecord]) -> WindowStats:
    n = len(rows)
    if n == 0:
        return WindowStats(rows=0)
    nonfinite = sum(1 for r in rows if not r.finite)
    cells = sum(r.inputs.size for r in rows)
    missing = sum(int(np.isnan(r.inputs).sum()) for r in rows)
    span = rows[-1].ts - rows[0].ts
    return WindowStats(
        rows=n,
        latency_quantiles=latency_quantiles([r.latency_seconds for r in rows]),
        nonfinite_ratio=nonfinite / n,
        input_missing_ratio=(missing / cells) if cells else None,
        rows_per_second=(n / span) if span > 0 else None,
    )


@dataclass(frozen=True, slots=True)
class _Pending:
    version: str
    prediction: int | None
    ts: float


@dataclass(frozen=True, slots=True)
class AccuracyStats:
    labeled_total: int
    correct_total: int
    window: int
    accuracy_ratio: float | None


class LabelJoin:
    """Joins delayed labels to predictions by request id and keeps per-version accuracy.

    Predictions wait in a bounded table (oldest evicted, by count and age); labels that arrive before their
    prediction wait in a smaller bounded buffer. A labeled prediction without a usable output (error or
    non-finite) counts as labeled and wrong.

        >>> j = LabelJoin(accuracy_window=500)
        >>> j.add_predictions(records); j.add_labels(labels)
        >>> j.accuracy("v1").accuracy_ratio
        0.97
    """

    def __init__(
        self,
        max_pending: int = 100_000,
        max_age_seconds: float = 3600.0,
        accuracy_window: int = 500,
        max_unmatched: int = 10_000,
        max_versions: int = 16,
    ) -> None:
        self.max_pending = int(max_pending)
        self.max_age_seconds = float(max_age_seconds)
        self.accuracy_window = int(accuracy_window)
        self.max_unmatched = int(max_unmatched)
        self.max_versions = int(max_versions)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._unmatched: OrderedDict[str, LabelRecord] = OrderedDict()
        self._recent: OrderedDict[str, deque[bool]] = OrderedDict()
        self._labeled: dict[str, int] = {}
        self._correct: dict[str, int] = {}
        self.newest_label_ts: float | None = None
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add_predictions(self, records: Iterable[PredictionRecord]) -> None:
        for r in records:
            self._pending[r.request_id] = _Pending(r.version, r.prediction if r.finite else None, r.ts)
            self._pending.move_to_end(r.request_id)
            early = self._unmatched.pop(r.request_id, None)
            if early is not None:
                self._join(early)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.evicted += 1

    def add_labels(self, labels: Iterable[LabelRecord]) -> int:
        """Join what can be joined now; returns how many labels were joined."""
        joined = 0
        for lab in labels:
            if lab.ts and (self.newest_label_ts is None or lab.ts > self.newest_label_ts):
                self.newest_label_ts = lab.ts
            if self._join(lab):
                joined += 1
            else:
                self._unmatched[lab.request_id] = lab
                while len(self._unmatched) > self.max_unmatched:
                    self._unmatched.popitem(last=False)
        return joined

    def _join(self, lab: LabelRecord) -> bool:
        pred = self._pending.pop(lab.request_id, None)
        if pred is None:
            return False
        correct = pred.prediction is not None and pred.prediction == lab.label
        v = pred.version
        if v not in self._recent:
            self._recent[v] = deque(maxlen=self.accuracy_window)
            while len(self._recent) > self.max_versions:
                old, _ = self._recent.popitem(last=False)
                self._labeled.pop(old, None)
                self._correct.pop(old, None)
        self._recent[v].append(correct)
        self._labeled[v] = self._labeled.get(v, 0) + 1
        self._correct[v] = self._correct.get(v, 0) + int(correct)
        return True

    def prune(self, now: float) -> None:
        cutoff = now - self.max_age_seconds
        while self._pending:
            rid, p = next(iter(self._pending.items()))
            if p.ts >= cutoff:
                break
            del self._pending[rid]
            self.evicted += 1
        while self._unmatched:
            rid, lab = next(iter(self._unmatched.items()))
            if lab.ts >= cutoff:
                break
            del self._unmatched[rid]

    def versions(self) -> list[str]:
        return list(self._recent)

    def accuracy(self, version: str) -> AccuracyStats:
        recent = self._recent.get(version)
        n = len(recent) if recent else 0
        return AccuracyStats(
            labeled_total=self._labeled.get(version, 0),
            correct_total=self._correct.get(version, 0),
            window=n,
            accuracy_ratio=(sum(recent) / n) if recent else None,
        )


class CounterRate:
    """Increase of a counter per second over a time window, robust to counter resets (server restarts)."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.window_seconds = float(window_seconds)
        self._points: deque[tuple[float, float]] = deque()

    def add(self, at: float, value: float) -> None:
        if self._points and value < self._points[-1][1]:
            self._points.clear()  # counter reset: start over rather than report a negative rate
        self._points.append((at, value))
        while len(self._points) > 2 and self._points[0][0] < at - self.window_seconds:
            self._points.popleft()

    def clear(self) -> None:
        self._points.clear()

    def increase(self) -> float | None:
        if len(self._points) < 2:
            return None
        return self._points[-1][1] - self._points[0][1]

    def rate(self) -> float | None:
        if len(self._points) < 2:
            return None
        dt = self._points[-1][0] - self._points[0][0]
        return (self._points[-1][1] - self._points[0][1]) / dt if dt > 0 else None


def error_ratio(errors: CounterRate, requests: CounterRate) -> float | None:
    """THE error ratio (docs/contracts.md): increase of ``model_request_errors_total`` divided by the
    increase of ``model_requests_total`` over the same window; None (missing) when no request came in.

    The Prometheus recording rule ``model:request_errors:ratio_rate5m`` is this expression over 5m, and
    the service's ``error_rate`` signal tests the same two counters.
    """
    d_req, d_err = requests.increase(), errors.increase()
    if d_req is None or d_req <= 0 or d_err is None:
        return None
    return min(max(d_err / d_req, 0.0), 1.0)
