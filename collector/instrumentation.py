"""Instrumentation a model server embeds: Prometheus metrics plus bounded prediction and feedback logs.

The ``CollectorRegistry`` is passed in, never global; weight statistics are computed at scrape time by
a custom collector. Names and labels follow docs/contracts.md.

    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> reg = CollectorRegistry()
    >>> inst = ModelInstrumentation(reg, model="digits", version="v1")
    >>> rid = inst.new_request_id()
    >>> inst.record_request(0.004, [PredictionRecord(rid, time.time(), "v1", [0.0] * 64, 3, True, 0.004)])
    >>> inst.predictions(after=0, limit=100).cursor
    1
"""
from __future__ import annotations

import enum
import itertools
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "ErrorReason",
    "FeedbackRecord",
    "InFlightCollector",
    "ModelInstrumentation",
    "ModelStateCollector",
    "Page",
    "PredictionRecord",
    "RingLog",
    "WeightStats",
]

# ms-level inference up to multi-second stalls (a hang or starvation shows in the top buckets)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ErrorReason(enum.StrEnum):
    INVALID_INPUT = "invalid_input"
    NONFINITE_OUTPUT = "nonfinite_output"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One served row: inputs as given (None = missing), prediction None when the output was non-finite."""

    request_id: str
    ts: float
    version: str
    inputs: list[float | None]
    prediction: int | None
    finite: bool
    latency_seconds: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A delayed ground-truth label for a request id."""

    request_id: str
    label: int
    ts: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Records after a cursor; ``cursor`` is the position to pass as ``after`` next time."""

    cursor: int
    records: tuple[T, ...]


class RingLog(Generic[T]):
    """Bounded, thread-safe log with a monotonically increasing cursor (1 for the first record).

    A reader asks for records ``after`` the last cursor it saw. A cursor beyond the newest record
    (the writer restarted and counts from 1 again) is treated as 0, so a reader never stalls.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._items: deque[tuple[int, T]] = deque(maxlen=maxlen)
        self._seq = 0
        self._lock = threading.Lock()

    def append(self, item: T) -> int:
        with self._lock:
            self._seq += 1
            self._items.append((self._seq, item))
            return self._seq

    def extend(self, items: Iterable[T]) -> int:
        with self._lock:
            for item in items:
                self._seq += 1
                self._items.append((self._seq, item))
            return self._seq

    @property
    def last_cursor(self) -> int:
        return self._seq

    def __len__(self) -> int:
        return len(self._items)

    def page(self, after: int = 0, limit: int = 1000) -> Page[T]:
        with self._lock:
            if after > self._seq:
                after = 0
            if limit <= 0 or not self._items:
                return Page(after, ())
            first = self._items[0][0]
            start = max(after + 1 - first, 0)
            chosen = list(itertools.islice(self._items, start, start + limit))
            cursor = chosen[-1][0] if chosen else after
            return Page(cursor, tuple(item for _, item in chosen))


@dataclass(frozen=True, slots=True)
class WeightStats:
    """Scrape-time summary of the live weights: count of non-finite values and max |finite value|."""

    nonfinite: int
    abs_max: float


class ModelStateCollector(Collector):
    """Custom collector: ``model_info``, ``model_weights_nonfinite`` and ``model_weights_abs_max``."""

    def __init__(self, model: str, version: Callable[[], str],
                 weight_stats: Callable[[], WeightStats | None] | None = None) -> None:
        self._model = model
        self._version = version
        self._weight_stats = weight_stats

    def collect(self) -> Iterator[Metric]:
        version = self._version()
        info = GaugeMetricFamily("model_info", "The model served (value 1)", labels=["model", "version"])
        info.add_metric([self._model, version], 1.0)
        yield info
        stats = self._weight_stats() if self._weight_stats else None
        if stats is None:
            return
        nf = GaugeMetricFamily("model_weights_nonfinite", "Non-finite values in the loaded weights",
                               labels=["model", "version"])
        nf.add_metric([self._model, version], float(stats.nonfinite))
        yield nf
        am = GaugeMetricFamily("model_weights_abs_max", "Largest absolute finite value in the loaded weights",
                               labels=["model", "version"])
        am.add_metric([self._model, version], float(stats.abs_max))
        yield am


class InFlightCollector(Collector):
    """``model_requests_in_flight`` and ``model_oldest_request_age_seconds``, read at scrape time.

    A hung server answers nothing, so its latency histogram and request counter simply stop moving;
    what gives a hang away is a request that has been in flight for far longer than any answer takes.
    """

    def __init__(self, model: str, version: Callable[[], str]) -> None:
        self._model = model
        self._version = version
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._ids = itertools.count()

    @contextmanager
    def track(self) -> Iterator[None]:
        key = next(self._ids)
        with self._lock:
            self._started[key] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._started.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        with self._lock:
            n = len(self._started)
            oldest = min(self._started.values(), default=now)
        labels = [self._model, self._version()]
        inflight = GaugeMetricFamily("model_requests_in_flight", "Predict requests being answered now",
                                     labels=["model", "version"])
        inflight.add_metric(labels, float(n))
        yield inflight
        age = GaugeMetricFamily("model_oldest_request_age_seconds",
                                "Age of the oldest predict request still in flight (0 when none)",
                                labels=["model", "version"])
        age.add_metric(labels, max(0.0, now - oldest))
        yield age


class ModelInstrumentation:
    """Metrics and logs for one served model; ``set_version`` after a model swap.

        >>> inst = ModelInstrumentation(CollectorRegistry(), model="digits", version="v1",
        ...                             weight_stats=lambda: WeightStats(0, 1.5))
        >>> inst.record_error(ErrorReason.INVALID_INPUT)
    """

    def __init__(self, registry: CollectorRegistry, model: str, version: str,
                 weight_stats: Callable[[], WeightStats | None] | None = None,
                 prediction_log_size: int = 20_000, feedback_log_size: int = 20_000,
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.model = model
        self._version = version
        self._lock = threading.Lock()
        labels = ["model", "version"]
        self.duration = Histogram("model_request_duration_seconds", "Time to answer a predict request",
                                  labels, buckets=tuple(buckets), registry=registry)
        self.requests = Counter("model_requests_total", "Predict requests received", labels,
                                registry=registry)
        self.errors = Counter("model_request_errors_total", "Predict requests that failed, by reason",
                              labels + ["reason"], registry=registry)
        self.nonfinite = Counter("model_nonfinite_outputs_total", "Predicted rows with a non-finite output",
                                 labels, registry=registry)
        registry.register(ModelStateCollector(model, lambda: self.version, weight_stats))
        self._in_flight = InFlightCollector(model, lambda: self.version)
        registry.register(self._in_flight)
        self.prediction_log: RingLog[PredictionRecord] = RingLog(prediction_log_size)
        self.feedback_log: RingLog[FeedbackRecord] = RingLog(feedback_log_size)
        # request id -> True for ids still in the prediction log window (for feedback validation)
        self._known_ids: OrderedDict[str, None] = OrderedDict()
        self._known_max = prediction_log_size
        self._touch(version)

    def _touch(self, version: str) -> None:
        # create every series at 0 so rate() and error ratios have a baseline before the first event
        lb = self._labels(version)
        self.duration.labels(**lb)
        self.requests.labels(**lb)
        self.nonfinite.labels(**lb)
        for reason in ErrorReason:
            self.errors.labels(**lb, reason=reason.value)

    @property
    def version(self) -> str:
        return self._version

    def set_version(self, version: str) -> None:
        self._touch(version)
        self._version = version

    def in_flight(self) -> Any:
        """Context manager around answering one predict request (feeds the in-flight gauges)."""
        return self._in_flight.track()

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def _labels(self, version: str | None = None) -> dict[str, str]:
        return {"model": self.model, "version": version or self._version}

    def record_request(self, latency_seconds: float, records: Sequence[PredictionRecord],
                       version: str | None = None) -> None:
        """Count one answered predict request and log its rows."""
        lb = self._labels(version)
        self.requests.labels(**lb).inc()
        self.duration.labels(**lb).observe(latency_seconds)
        n_bad = sum(1 for r in records if not r.finite)
        if n_bad:
            self.nonfinite.labels(**lb).inc(n_bad)
            self.errors.labels(**lb, reason=ErrorReason.NONFINITE_OUTPUT.value).inc()
        self.prediction_log.extend(records)
        with self._lock:
            for r in records:
                self._known_ids[r.request_id] = None
            while len(self._known_ids) > self._known_max:
                self._known_ids.popitem(last=False)

    def record_error(self, reason: ErrorReason, latency_seconds: float | None = None,
                     version: str | None = None) -> None:
        """Count a failed predict request (it also counts as a request)."""
        lb = self._labels(version)
        self.requests.labels(**lb).inc()
        self.errors.labels(**lb, reason=ErrorReason(reason).value).inc()
        if latency_seconds is not None:
            self.duration.labels(**lb).observe(latency_seconds)

    def known_request(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._known_ids

    def record_feedback(self, items: Sequence[tuple[str, int]], ts: float | None = None) -> int:
        now = time.time() if ts is None else ts
        self.feedback_log.extend(FeedbackRecord(rid, int(label), now) for rid, label in items)
        return len(items)

    def predictions(self, after: int = 0, limit: int = 1000) -> Page[PredictionRecord]:
        return self.prediction_log.page(after, limit)

    def feedback(self, after: int = 0, limit: int = 1000) -> Page[FeedbackRecord]:
        return self.feedback_log.page(after, limit)


def finite_or_none(x: float) -> float | None:
    """JSON-safe float: None for NaN/inf."""
    return x if math.isfinite(x) else None


# ---- issue 13: a compact columnar page of the prediction log (Arrow IPC), for the sidecar's pull ----
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def prediction_page_arrow(page: Page[PredictionRecord]) -> bytes:
    """One ``GET /predictions?format=arrow`` page: an Arrow IPC stream, inputs as one float64 matrix.

    JSON of 1,000 rows x 64 inputs is ~444 KiB and costs the server tens of ms of its interpreter; here
    the inputs become one numpy array (None -> NaN) and every column is written as a buffer. The cursor
    travels in the schema metadata.
    """
    import numpy as np
    import pyarrow as pa

    recs = page.records
    width = max((len(r.inputs) for r in recs), default=0)
    if recs and all(len(r.inputs) == width for r in recs):
        matrix = np.array([r.inputs for r in recs], dtype=np.float64)  # None becomes NaN
    else:  # ragged rows (bad requests): pad with NaN, keep each row's own width
        matrix = np.full((len(recs), width), np.nan)
        for i, r in enumerate(recs):
            matrix[i, : len(r.inputs)] = np.array(r.inputs, dtype=np.float64)
    widths = np.array([len(r.inputs) for r in recs], dtype=np.int32)
    inputs = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), width) if width else pa.nulls(len(recs))
    table = pa.table(
        {
            "request_id": pa.array([r.request_id for r in recs], pa.string()),
            "ts": pa.array(np.array([r.ts for r in recs], dtype=np.float64)),
            "version": pa.array([r.version for r in recs], pa.string()),
            "inputs": inputs,
            "width": pa.array(widths),
            "prediction": pa.array([r.prediction for r in recs], pa.int64()),
            "finite": pa.array([r.finite for r in recs], pa.bool_()),
            "latency_seconds": pa.array(np.array([r.latency_seconds for r in recs], dtype=np.float64)),
            "error": pa.array([r.error for r in recs], pa.string()),
        }
    ).replace_schema_metadata({"cursor": str(page.cursor)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
