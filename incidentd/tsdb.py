"""The embedded metric store: self-scrapes sidecars into bounded in-memory series (one machine, no server).

It implements the same ``Source`` interface as the Prometheus source, so detection code does not know
which one it reads.

Built to stay linear in the number of models (issue 16): series are indexed model -> metric -> labels,
so a read for one model touches only that model's series; each series keeps its points in two numpy
arrays used as a ring (16 bytes a point), and a read bisects them for the window it asks for; expiry
runs on a timer (``expire``, scheduled by the service), never as a walk of every series after every
scrape; a scrape whose series keys are those of the target's previous scrape, in the same order, maps
its lines to their series by one string comparison, with no lookup or label parsing per line.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from incidentd.sources.base import Series

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
NO_MODEL = ""            # index bucket of series without a ``model`` label
_FIRST_CAPACITY = 16


class _Ring:
    """Time-ordered points of one series: two float64 arrays used as a ring of at most ``limit`` points."""

    __slots__ = ("name", "labels", "model", "ts", "vs", "head", "size", "limit", "last_t")

    def __init__(self, name: str, labels: Labels, limit: int):
        self.name = name
        self.labels = labels
        self.model = dict(labels).get("model", NO_MODEL)
        self.limit = max(1, limit)
        cap = min(_FIRST_CAPACITY, self.limit)
        self.ts = np.empty(cap, dtype=np.float64)
        self.vs = np.empty(cap, dtype=np.float64)
        self.head = 0      # index of the oldest point
        self.size = 0
        # the newest time as a Python float: checked on every append, reading it from the array costs more
        self.last_t = -np.inf

    def _linear(self) -> tuple[np.ndarray, np.ndarray]:
        cap = len(self.ts)
        idx = (self.head + np.arange(self.size)) % cap
        return self.ts[idx], self.vs[idx]

    def _resize(self, cap: int) -> None:
        ts, vs = self._linear()
        self.ts = np.empty(cap, dtype=np.float64)
        self.vs = np.empty(cap, dtype=np.float64)
        self.ts[:self.size], self.vs[:self.size] = ts, vs
        self.head = 0

    def append(self, t: float, v: float) -> None:
        last = self.last_t
        if t == last:                   # the same sample scraped twice: keep the newer value
            self.vs[(self.head + self.size - 1) % len(self.ts)] = v
            return
        if t < last:                    # out of order (rare): insert where it belongs
            ts, vs = self._linear()
            i = int(np.searchsorted(ts, t))
            if i < self.size and ts[i] == t:
                vs[i] = v
                ts_new, vs_new = ts, vs
            else:
                ts_new, vs_new = np.insert(ts, i, t), np.insert(vs, i, v)
            if len(ts_new) > self.limit:
                ts_new, vs_new = ts_new[-self.limit:], vs_new[-self.limit:]
            cap = max(len(self.ts), len(ts_new))
            self.ts = np.empty(cap, dtype=np.float64)
            self.vs = np.empty(cap, dtype=np.float64)
            self.size = len(ts_new)
            self.ts[:self.size], self.vs[:self.size] = ts_new, vs_new
            self.head = 0
            self.last_t = float(ts_new[-1])
            return
        cap = len(self.ts)
        if self.size == cap and cap < self.limit:
            self._resize(min(cap * 2, self.limit))
            cap = len(self.ts)
        self.last_t = t
        if self.size == cap:            # full at the limit: overwrite the oldest
            self.ts[self.head], self.vs[self.head] = t, v
            self.head = (self.head + 1) % cap
            return
        i = (self.head + self.size) % cap
        self.ts[i], self.vs[i] = t, v
        self.size += 1

    def _segments(self) -> list[tuple[int, int]]:
        """The ring as at most two contiguous, time-ordered index ranges [a, b)."""
        cap = len(self.ts)
        end = self.head + self.size
        if end <= cap:
            return [(self.head, end)]
        return [(self.head, cap), (0, end - cap)]

    def window(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """Points with start <= t <= end, found by bisection: only the window is copied."""
        parts_t, parts_v = [], []
        for a, b in self._segments():
            seg = self.ts[a:b]
            lo = int(np.searchsorted(seg, start, side="left"))
            hi = int(np.searchsorted(seg, end, side="right"))
            if hi > lo:
                parts_t.append(seg[lo:hi])
                parts_v.append(self.vs[a + lo:a + hi])
        if not parts_t:
            return np.empty(0), np.empty(0)
        if len(parts_t) == 1:
            return parts_t[0], parts_v[0]
        return np.concatenate(parts_t), np.concatenate(parts_v)

    def drop_before(self, horizon: float) -> None:
        dropped = 0
        for a, b in self._segments():
            seg = self.ts[a:b]
            k = int(np.searchsorted(seg, horizon, side="left"))
            dropped += k
            if k < b - a:
                break
        if dropped:
            self.head = (self.head + dropped) % len(self.ts)
            self.size -= dropped
            if self.size == 0:
                self.head = 0
                self.last_t = -np.inf

    def nbytes(self) -> int:
        return int(self.ts.nbytes + self.vs.nbytes)


class _Lines:
    """What one target's last exposition resolved to: its series keys in order, joined into one string, and
    their rings. A scrape whose keys are the same, in the same order (the usual case), is matched by one
    string comparison instead of a lookup per line, which kept the per-sample cost from growing with the
    number of series held (each lookup touched a key stored a round ago, far apart in memory)."""

    __slots__ = ("skeleton", "rings", "by_key", "models")

    def __init__(self, skeleton: str | None, rings: list[_Ring], by_key: dict[str, _Ring]):
        self.skeleton = skeleton
        self.rings = rings
        self.by_key = by_key
        self.models = frozenset(r.model for r in by_key.values() if r.model != NO_MODEL)

    def keeping(self, keep: set[int]) -> _Lines:
        """The same map without the rings whose id is not in ``keep`` (the skeleton must then be rebuilt)."""
        return _Lines(None, [], {k: r for k, r in self.by_key.items() if id(r) in keep})


class EmbeddedStore:
    """Bounded in-memory series, keyed like Prometheus (name + sorted labels), indexed by model.

        >>> store = EmbeddedStore(retention_seconds=900, max_points=2000)
        >>> store.ingest_text('model_up{model="m"} 1\\n', at=100.0)
        1
        >>> store.read("model_up", {"model": "m"}, 0, 200, 1)[0].values
        (1.0,)
    """

    def __init__(self, retention_seconds: float = 1800.0, max_points: int = 4000):
        self.retention = retention_seconds
        self.max_points = max_points
        # model -> metric -> labels -> ring
        self._index: dict[str, dict[str, dict[Labels, _Ring]]] = {}
        # per ingest source (a target), then per extra label set, the ring each exposition line resolved to
        # last time; keyed by origin first so a lookup for one target never walks the others
        self._resolved: dict[str, dict[Labels, _Lines]] = {}
        self._lock = threading.Lock()
        self.out_of_order = 0
        self.expired_series = 0

    # ------------------------------------------------------------------ ingest

    def _ring(self, name: str, labels: Labels) -> _Ring:
        model = dict(labels).get("model", NO_MODEL)
        by_labels = self._index.setdefault(model, {}).setdefault(name, {})
        ring = by_labels.get(labels)
        if ring is None:
            ring = by_labels[labels] = _Ring(name, labels, self.max_points)
        return ring

    def _resolve(self, key: str, extra: dict[str, str]) -> list[_Ring]:
        """The rings one exposition series key (``name{labels}``) stands for, parsed by the official parser."""
        rings = []
        for family in text_string_to_metric_families(key + " 0\n"):
            for sample in family.samples:
                rings.append(self._ring(sample.name, tuple(sorted({**sample.labels, **extra}.items()))))
        if len(rings) != 1:
            raise ValueError(f"cannot parse exposition line {key!r}")
        return rings

    def ingest_text(self, text: str, at: float, extra_labels: dict[str, str] | None = None,
                    origin: str | None = None) -> int:
        """Parse Prometheus exposition text and append every sample at ``at`` (or its own timestamp).

        ``origin`` names where the text came from (a target): lines seen in its previous scrape map
        straight to their series. Raises ``ValueError`` on a line that is not valid exposition format.
        """
        extra = extra_labels or {}
        extra_key: Labels = tuple(sorted(extra.items()))
        keys: list[str] = []
        values: list[float] = []
        stamps: list[float] = []
        for raw in text.splitlines():           # parsed whole first: a bad line ingests nothing
            line = raw.strip()
            if not line or line[0] == "#":
                continue
            brace = line.rfind("}")
            if brace >= 0:
                key, rest = line[:brace + 1], line[brace + 1:].split()
            else:
                parts = line.split()
                key, rest = parts[0], parts[1:]
            if not rest or len(rest) > 2:
                raise ValueError(f"not an exposition sample line: {line[:200]!r}")
            try:
                values.append(float(rest[0]))
                stamps.append(float(rest[1]) / 1000.0 if len(rest) == 2 else at)
            except ValueError:
                raise ValueError(f"not an exposition sample line: {line[:200]!r}") from None
            keys.append(key)
        skeleton = "\n".join(keys)
        with self._lock:
            last = self._resolved.get(origin, {}).get(extra_key) if origin is not None else None
            if last is not None and last.skeleton == skeleton:
                rings = last.rings
            else:
                seen = last.by_key if last is not None else {}
                by_key: dict[str, _Ring] = {}
                rings = []
                for key in keys:
                    ring = by_key.get(key) or seen.get(key) or self._resolve(key, extra)[0]
                    by_key[key] = ring
                    rings.append(ring)
                if origin is not None:
                    self._resolved.setdefault(origin, {})[extra_key] = _Lines(skeleton, rings, by_key)
            for ring, ts, value in zip(rings, stamps, values):
                if ts < ring.last_t:
                    self.out_of_order += 1
                ring.append(ts, value)
        return len(rings)

    # ------------------------------------------------------------------ expiry (on a timer, not per scrape)

    def expire(self, now: float | None = None) -> int:
        """Drop points older than the retention and series left empty; returns the series removed."""
        now = time.time() if now is None else now
        horizon = now - self.retention
        removed = 0
        with self._lock:
            for model in list(self._index):
                by_metric = self._index[model]
                for name in list(by_metric):
                    by_labels = by_metric[name]
                    for labels in list(by_labels):
                        ring = by_labels[labels]
                        ring.drop_before(horizon)
                        if ring.size == 0:
                            del by_labels[labels]
                            removed += 1
                    if not by_labels:
                        del by_metric[name]
                if not by_metric:
                    del self._index[model]
            if removed:
                live = {id(r) for m in self._index.values() for ls in m.values() for r in ls.values()}
                for by_extra in self._resolved.values():
                    for key, lines in by_extra.items():
                        by_extra[key] = lines.keeping(live)
            self.expired_series += removed
        return removed

    def forget_model(self, model: str) -> int:
        """Remove every series of ``model`` (a retired model); returns how many."""
        with self._lock:
            by_metric = self._index.pop(model, {})
            gone = {id(r) for ls in by_metric.values() for r in ls.values()}
            if gone:
                for by_extra in self._resolved.values():
                    for key, lines in by_extra.items():
                        by_extra[key] = lines.keeping({id(r) for r in lines.by_key.values()} - gone)
            return len(gone)

    def models_of(self, origin: str) -> set[str]:
        """The models whose series came from ``origin`` in its last ingest."""
        with self._lock:
            return {m for lines in self._resolved.get(origin, {}).values() for m in lines.models}

    def forget_origin(self, origin: str) -> None:
        """Stop caching the line -> series map of a target that is gone."""
        with self._lock:
            self._resolved.pop(origin, None)

    # ------------------------------------------------------------------ reads

    def _buckets(self, metric: str, matchers: dict[str, str]) -> Iterable[dict[Labels, _Ring]]:
        model = matchers.get("model")
        if model is not None:
            b = self._index.get(model, {}).get(metric)
            return [b] if b else []
        return [m[metric] for m in self._index.values() if metric in m]

    def _select(self, metric: str, matchers: dict[str, str] | None, start: float, end: float) -> list[Series]:
        want = (matchers or {}).items()
        out = []
        for by_labels in self._buckets(metric, dict(matchers or {})):
            for labels, ring in by_labels.items():
                if want:
                    d = dict(labels)
                    if any(d.get(k) != v for k, v in want):
                        continue
                ts, vs = ring.window(start, end)
                if len(ts):
                    out.append(Series(metric, labels, tuple(ts.tolist()), tuple(vs.tolist())))
        return out

    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]:
        with self._lock:
            return self._select(metric, matchers, start, end)

    def read_by_model(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
                      step: float) -> dict[str, list[Series]]:
        """Every model's series of ``metric`` in one call, keyed by the ``model`` label."""
        out: dict[str, list[Series]] = {}
        with self._lock:
            for s in self._select(metric, matchers, start, end):
                m = s.label("model")
                if m:
                    out.setdefault(m, []).append(s)
        return out

    def add(self, metric: str, labels: dict[str, str], at: float, value: float) -> None:
        """Append one sample (the scraper's own ``up`` series)."""
        with self._lock:
            ring = self._ring(metric, tuple(sorted(labels.items())))
            if at < ring.last_t:
                self.out_of_order += 1
            ring.append(at, value)

    # ------------------------------------------------------------------ introspection

    def names(self) -> list[str]:
        with self._lock:
            return sorted({n for m in self._index.values() for n in m})

    def models(self) -> list[str]:
        with self._lock:
            return sorted(m for m in self._index if m != NO_MODEL)

    def series_count(self) -> int:
        with self._lock:
            return sum(len(ls) for m in self._index.values() for ls in m.values())

    def point_count(self) -> int:
        with self._lock:
            return sum(r.size for m in self._index.values() for ls in m.values() for r in ls.values())

    def array_bytes(self) -> int:
        """Bytes held by the point arrays (capacity, not just the points stored)."""
        with self._lock:
            return sum(r.nbytes() for m in self._index.values() for ls in m.values() for r in ls.values())


class Scraper:
    """Pulls /metrics from each target into the embedded store; a failing target is recorded, not fatal.

    Targets are fetched and parsed by a few threads at once (one target's parse overlaps the others'
    network waits), a bounded number in flight. ``targets`` may be replaced between rounds (discovery does).

    Like Prometheus, every scrape also writes ``up{instance=<target>, model=<m>}``: 1 when the target
    answered, 0 when it did not, for each model the target last exported (or the configured ``models``
    when it never answered). A failing sidecar is thus evidence (the ``monitoring_down`` signal), never
    just missing data.
    """

    def __init__(self, store: EmbeddedStore, targets: list[str], timeout: float = 5.0,
                 client: httpx.Client | None = None, workers: int = 8, models: Iterable[str] | None = None):
        self.store = store
        self.targets = list(targets)
        self.configured_models = list(models or [])
        self.models: dict[str, set[str]] = {}   # target -> the model label values it exported last
        self._client = client or httpx.Client(timeout=timeout)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="scrape")
        self._window = 2 * max(1, workers)      # fetches in flight at once
        self.failures: dict[str, int] = {t: 0 for t in self.targets}
        self.last_error: dict[str, str] = {}

    def _scrape(self, target: str, now: float) -> int:
        """Fetch and ingest one target, on a pool thread: a target's parse overlaps the others' network waits."""
        resp = self._client.get(target.rstrip("/") + "/metrics")
        resp.raise_for_status()
        return self.store.ingest_text(resp.text, now, origin=target)

    def scrape_once(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        total = 0
        # A bounded window of scrapes in flight, not one future per target for the whole round: at hundreds
        # of targets those objects outlived the young GC generations and made full collections (which walk
        # every stored series) frequent, a cost per target that grew with the number of targets.
        todo = iter(list(self.targets))
        flight: deque[tuple[str, Future[int]]] = deque()
        for target in todo:
            flight.append((target, self._pool.submit(self._scrape, target, now)))
            if len(flight) >= self._window:
                break
        while flight:
            target, fut = flight.popleft()
            for nxt in todo:
                flight.append((nxt, self._pool.submit(self._scrape, nxt, now)))
                break
            up = 0.0
            try:
                total += fut.result()
                seen = self.store.models_of(target)
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
        self._pool.shutdown(wait=True)
        self._client.close()
