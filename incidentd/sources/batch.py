"""BatchedSource: one query per signal for all models, behind the per-model ``read`` detection calls.

Detection reads every signal of every model for the same instant ``end`` (the cycle's ``now``). The first
read of a metric in a cycle asks the wrapped source for every model at once (``read_by_model``, one
PromQL ``query_range`` without a model matcher) over a window reaching ``slack`` seconds before the
first model's cursor, on a grid that ends at ``end``; the other models' reads of that metric are
answered from that answer. A read reaching further back than the batch (a model seen for the first
time, a verification window) goes to the wrapped source for that model alone. A new ``end`` starts a new cycle and drops the batch.

    >>> src = BatchedSource(PrometheusSource("http://127.0.0.1:9090"), slack=60)   # doctest: +SKIP
    >>> src.read("model_up", {"model": "a"}, t - 30, t, 10)   # one query for all models  # doctest: +SKIP
    >>> src.read("model_up", {"model": "b"}, t - 30, t, 10)   # answered from it          # doctest: +SKIP
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

from incidentd.sources.base import Series


class ByModelSource(Protocol):
    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]: ...

    def read_by_model(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
                      step: float) -> dict[str, list[Series]]: ...


@dataclass(frozen=True, slots=True)
class _Batch:
    start: float
    by_model: dict[str, list[Series]]


# Prometheus' API takes and returns times in whole milliseconds: the batch's last evaluation can come back
# up to half a millisecond after the ``end`` asked for. It is still the point at ``end``.
_TIME_ROUNDING = 0.0005


def _clip(s: Series, start: float, end: float) -> Series | None:
    lo, hi = start - _TIME_ROUNDING, end + _TIME_ROUNDING
    pts = [(t, v) for t, v in zip(s.timestamps, s.values) if lo <= t <= hi]
    if not pts:
        return None
    ts, vs = zip(*pts)
    return Series(s.name, s.labels, tuple(ts), tuple(vs))


class BatchedSource:
    """Answers per-model reads from one batched read per (metric, other matchers, step) and cycle."""

    def __init__(self, inner: ByModelSource, slack: float = 60.0):
        self.inner = inner
        self.slack = slack
        self._end: float | None = None
        self._batches: dict[tuple, _Batch] = {}
        self._lock = threading.Lock()
        self.batched_queries = 0       # read_by_model calls made
        self.single_queries = 0        # per-model reads passed through

    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]:
        rest = dict(matchers or {})
        model = rest.pop("model", None)
        if model is None:
            return self.inner.read(metric, matchers, start, end, step)
        key = (metric, tuple(sorted(rest.items())), step)
        with self._lock:
            if end != self._end:
                self._batches.clear()
                self._end = end
            batch = self._batches.get(key)
            if batch is None:
                # A grid that ends at ``end``: the newest samples are evaluated, as in a per-model read.
                span = max(end - (start - self.slack), 0.0)
                qstart = end - math.ceil(span / step) * step if step > 0 else start - self.slack
                batch = _Batch(qstart, self.inner.read_by_model(metric, rest, qstart, end, step))
                self._batches[key] = batch
                self.batched_queries += 1
        if start < batch.start:
            self.single_queries += 1
            return self.inner.read(metric, matchers, start, end, step)
        out = []
        for s in batch.by_model.get(model, []):
            c = _clip(s, start, end)
            if c is not None:
                out.append(c)
        return out

    def read_by_model(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
                      step: float) -> dict[str, list[Series]]:
        return self.inner.read_by_model(metric, matchers, start, end, step)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
