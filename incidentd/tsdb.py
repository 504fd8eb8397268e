"""The embedded metric store: self-scrapes sidecars into bounded in-memory series (one machine, no server).

It implements the same ``Source`` interface as the Prometheus source, so detection code does not know
which one it reads.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from incidentd.sources.base import Series

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Buffer:
    labels: tuple[tuple[str, str], ...]
    points: deque


class EmbeddedStore:
    """Bounded in-memory series, keyed like Prometheus (name + sorted labels).

        >>> store = EmbeddedStore(retention_seconds=900, max_points=2000)
        >>> store.ingest_text('model_up{model="m"} 1\\n', at=100.0)
        >>> store.read("model_up", {"model": "m"}, 0, 200, 1)[0].values
        (1.0,)
    """

    def __init__(self, retention_seconds: float = 1800.0, max_points: int = 4000):
        self.retention = retention_seconds
        self.max_points = max_points
        self._series: dict[str, dict[tuple, _Buffer]] = {}
        self._lock = threading.Lock()

    def ingest_text(self, text: str, at: float, extra_labels: dict[str, str] | None = None,
                    models: set[str] | None = None) -> int:
        """Parse Prometheus exposition text (with the official parser) and append every sample at ``at``.

        ``models``, when given, collects the ``model`` label values met in the text.
        """
        n = 0
        extra = extra_labels or {}
        with self._lock:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = tuple(sorted({**sample.labels, **extra}.items()))
                    by_labels = self._series.setdefault(sample.name, {})
                    buf = by_labels.get(labels)
                    if buf is None:
                        buf = by_labels[labels] = _Buffer(labels, deque(maxlen=self.max_points))
                    ts = sample.timestamp if sample.timestamp is not None else at
                    buf.points.append((float(ts), float(sample.value)))
                    n += 1
                    if models is not None and "model" in sample.labels:
                        models.add(sample.labels["model"])
            self._expire(at)
        return n

    def _expire(self, now: float) -> None:
        horizon = now - self.retention
        for name, by_labels in list(self._series.items()):
            for labels, buf in list(by_labels.items()):
                while buf.points and buf.points[0][0] < horizon:
                    buf.points.popleft()
                if not buf.points:
                    del by_labels[labels]
            if not by_labels:
                del self._series[name]

    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]:
        want = (matchers or {}).items()
        out = []
        with self._lock:
            for labels, buf in self._series.get(metric, {}).items():
                d = dict(labels)
                if any(d.get(k) != v for k, v in want):
                    continue
                pts = [(t, v) for t, v in buf.points if start <= t <= end]
                if pts:
                    ts, vs = zip(*pts)
                    out.append(Series(metric, labels, tuple(ts), tuple(vs)))
        return out

    def add(self, metric: str, labels: dict[str, str], at: float, value: float) -> None:
        """Append one sample (the scraper's own ``up`` series)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            by_labels = self._series.setdefault(metric, {})
            buf = by_labels.get(key)
            if buf is None:
                buf = by_labels[key] = _Buffer(key, deque(maxlen=self.max_points))
            buf.points.append((float(at), float(value)))

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._series)

    def series_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._series.values())


class Scraper:
    """Pulls /metrics from each target into the embedded store; a failing target is recorded, not fatal.

    Like Prometheus, every scrape also writes ``up{instance=<target>, model=<m>}``: 1 when the target
    answered, 0 when it did not, for each model the target last exported (or the configured ``models``
    when it never answered). A failing sidecar is thus evidence (the ``monitoring_down`` signal), never
    just missing data.
    """

    def __init__(self, store: EmbeddedStore, targets: list[str], timeout: float = 5.0,
                 models: list[str] | None = None):
        self.store = store
        self.targets = list(targets)
        self.configured_models = list(models or [])
        self.models: dict[str, set[str]] = {}   # target -> the model label values it exported last
        self._client = httpx.Client(timeout=timeout)
        self.failures: dict[str, int] = {t: 0 for t in self.targets}
        self.last_error: dict[str, str] = {}

    def scrape_once(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        total = 0
        for target in self.targets:
            up = 0.0
            try:
                resp = self._client.get(target.rstrip("/") + "/metrics")
                resp.raise_for_status()
                seen: set[str] = set()
                total += self.store.ingest_text(resp.text, now, models=seen)
                if seen:
                    self.models[target] = seen
                self.last_error.pop(target, None)
                up = 1.0
            except (httpx.HTTPError, ValueError) as e:
                self.failures[target] = self.failures.get(target, 0) + 1
                self.last_error[target] = str(e)
                log.warning("scrape of %s failed: %s", target, e)
            for model in sorted(self.models.get(target) or self.configured_models):
                self.store.add("up", {"instance": target, "model": model}, now, up)
        return total

    def close(self) -> None:
        self._client.close()


