"""The mapping engine: a parsed exposition and a metric map in, canonical per-model readings out.

Pure functions plus one small stateful window; no clock or network.

    >>> reading = extract(triton_map, parse_families(text), at=now)
    >>> window.add(reading)
    >>> window.latency_quantiles(("m", "1"))     # from the server's own histogram, over the window
    {0.5: 0.004, 0.9: 0.009, 0.99: 0.02}
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from collector.adapters.spec import SCALE, MetricMap, Signal, SignalSource, SourceType

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
ModelKey = tuple[str, str]  # (model, version)
SERVER_WIDE: ModelKey = ("", "")  # series without a model label (e.g. MLServer's REST histogram, TGI)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative buckets in base units; ``bounds`` ascending, the last one +Inf."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    def minus(self, older: Histogram) -> Histogram | None:
        """The observations between ``older`` and this one; None after a reset or a bucket-layout change."""
        if older.bounds != self.bounds:
            return None
        diff = tuple(a - b for a, b in zip(self.cumulative, older.cumulative, strict=True))
        if any(d < 0 for d in diff) or self.count < older.count:
            return None
        return Histogram(self.bounds, diff, self.sum - older.sum, self.count - older.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank q*count."""
        total = self.cumulative[-1] if self.cumulative else 0.0
        if total <= 0:
            return None
        rank = q * total
        prev_bound, prev_cum = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank and cum > prev_cum:
                if math.isinf(bound):
                    return prev_bound  # the top bucket has no upper bound: its lower bound is all we know
                lower = prev_bound if prev_bound < bound else 0.0
                return lower + (bound - lower) * (rank - prev_cum) / (cum - prev_cum)
            prev_bound, prev_cum = bound, cum
        return prev_bound

    def bucket_of(self, value: float) -> tuple[float, float]:
        """The (lower, upper] bucket a value falls in."""
        lower = 0.0
        for b in self.bounds:
            if value <= b:
                return lower, b
            lower = b
        return lower, math.inf


@dataclass(frozen=True, slots=True)
class SummaryReading:
    quantiles: dict[float, float]
    sum: float
    count: float


@dataclass(frozen=True, slots=True)
class PairReading:
    """A running total (in seconds) and a running count: their deltas give the mean per interval."""

    sum: float
    count: float


@dataclass(slots=True)
class ModelReading:
    """Everything the map found for one (model, version) in one exposition."""

    model: str
    version: str
    counters: dict[Signal, float] = field(default_factory=dict)
    gauges: dict[Signal, float] = field(default_factory=dict)
    histograms: dict[Signal, Histogram] = field(default_factory=dict)
    summaries: dict[Signal, SummaryReading] = field(default_factory=dict)
    pairs: dict[Signal, PairReading] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerReading:
    at: float
    kind: str
    models: dict[ModelKey, ModelReading]
    process: dict[Signal, float]  # server-wide
    gpus: dict[str, dict[Signal, float]]  # gpu label -> signal -> value

    def model_keys(self) -> list[ModelKey]:
        return sorted(self.models)


PER_PROCESS = frozenset({Signal.PROCESS_CPU_SECONDS, Signal.PROCESS_RESIDENT_MEMORY})
PER_GPU = frozenset({Signal.GPU_UTILIZATION, Signal.GPU_MEMORY_USED, Signal.GPU_MEMORY_TOTAL})


def parse_families(text: str) -> list[Metric]:
    """A Prometheus text exposition, parsed by prometheus_client (never by hand)."""
    return list(text_string_to_metric_families(text))


@dataclass(frozen=True, slots=True)
class _Source:
    family: Metric
    sample: str | None  # only this sample name (a histogram's ``_count`` read as a counter), else all


def _family_index(families: Iterable[Metric]) -> dict[str, _Source]:
    out: dict[str, _Source] = {}

    def put(name: str, source: _Source) -> None:
        # An empty family (a TYPE line whose samples the parser filed elsewhere) never hides a full one.
        if name not in out or not out[name].family.samples:
            out[name] = source

    for fam in families:
        put(fam.name, _Source(fam, None))
        # prometheus_client strips _total from counter family names; let maps name either form.
        if fam.type == "counter":
            put(fam.name + "_total", _Source(fam, None))
        if fam.type in ("histogram", "summary"):
            put(fam.name + "_count", _Source(fam, fam.name + "_count"))
            put(fam.name + "_sum", _Source(fam, fam.name + "_sum"))
    return out


def _pick(names: Sequence[str], combine: str, index: dict[str, _Source]) -> list[_Source]:
    present = [index[n] for n in names if n in index]
    if not present:
        return []
    return present if combine == "sum" else present[:1]


_UNSET = frozenset({"", "None", "none", "null"})  # MLServer writes version="None" for an unversioned model


def _key(labels: dict[str, str], m: MetricMap) -> ModelKey:
    model = next((labels[k] for k in m.labels.model if labels.get(k, "") not in _UNSET), "")
    version = next((labels[k] for k in m.labels.version
                    if labels.get(k, "") not in _UNSET and labels[k] not in m.labels.unversioned), "")
    return model, (version if model else "")


def _scalar_samples(sources: list[_Source], src: SignalSource) -> Iterable[tuple[dict[str, str], float]]:
    for so in sources:
        fam = so.family
        for s in fam.samples:
            if so.sample is not None:
                if s.name != so.sample:
                    continue
            elif fam.type in ("histogram", "summary", "gaugehistogram") or s.name.endswith("_created"):
                continue
            if not src.matches(s.labels) or not math.isfinite(s.value):
                continue
            yield s.labels, float(s.value)


def extract(m: MetricMap, families: Iterable[Metric], at: float) -> ServerReading:
    """Apply map ``m`` to one exposition; series the map does not name are ignored."""
    index = _family_index(families)
    models: dict[ModelKey, ModelReading] = {}
    process: dict[Signal, float] = {}
    gpus: dict[str, dict[Signal, float]] = {}

    def reading(key: ModelKey) -> ModelReading:
        if key not in models:
            models[key] = ModelReading(model=key[0], version=key[1])
        return models[key]

    for sig, src in m.signals.items():
        scale = SCALE[src.unit]
        fams = _pick(src.metric, src.combine, index)
        if not fams:
            continue
        if sig in PER_PROCESS:
            vals = [v for _, v in _scalar_samples(fams, src)]
            if vals:
                process[sig] = sum(vals) * scale
            continue
        if sig in PER_GPU:
            for labels, v in _scalar_samples(fams, src):
                gpu = labels.get(src.gpu_label or "gpu", "0")
                gpus.setdefault(gpu, {})[sig] = gpus.get(gpu, {}).get(sig, 0.0) + v * scale
            continue
        if src.type in (SourceType.COUNTER, SourceType.GAUGE):
            for labels, v in _scalar_samples(fams, src):
                r = reading(_key(labels, m))
                target = r.counters if src.type is SourceType.COUNTER else r.gauges
                target[sig] = target.get(sig, 0.0) + v * scale
        elif src.type is SourceType.HISTOGRAM:
            for key, h in _histograms(fams, src, m, scale).items():
                reading(key).histograms[sig] = h
        elif src.type is SourceType.SUMMARY:
            for key, sm in _summaries(fams, src, m, scale).items():
                reading(key).summaries[sig] = sm
        elif src.type is SourceType.COUNTER_PAIR:
            counts = _pick(src.count, src.combine, index)
            sums: dict[ModelKey, float] = {}
            ns: dict[ModelKey, float] = {}
            for labels, v in _scalar_samples(fams, src):
                k = _key(labels, m)
                sums[k] = sums.get(k, 0.0) + v * scale
            for labels, v in _scalar_samples(counts, src):
                k = _key(labels, m)
                ns[k] = ns.get(k, 0.0) + v
            for k in sums.keys() & ns.keys():
                reading(k).pairs[sig] = PairReading(sums[k], ns[k])
    return ServerReading(at=at, kind=m.kind, models=models, process=process, gpus=gpus)


def _histograms(
    sources: list[_Source], src: SignalSource, m: MetricMap, scale: float
) -> dict[ModelKey, Histogram]:
    buckets: dict[ModelKey, dict[float, float]] = {}
    sums: dict[ModelKey, float] = {}
    counts: dict[ModelKey, float] = {}
    for so in sources:
        for s in so.family.samples:
            labels = dict(s.labels)
            le = labels.pop("le", None)
            if not src.matches(labels):
                continue
            k = _key(labels, m)
            if s.name.endswith("_bucket") and le is not None:
                bound = float(le) * scale if le not in ("+Inf", "Inf") else math.inf
                b = buckets.setdefault(k, {})
                b[bound] = b.get(bound, 0.0) + float(s.value)
            elif s.name.endswith("_sum"):
                sums[k] = sums.get(k, 0.0) + float(s.value) * scale
            elif s.name.endswith("_count"):
                counts[k] = counts.get(k, 0.0) + float(s.value)
    out: dict[ModelKey, Histogram] = {}
    for k, b in buckets.items():
        bounds = tuple(sorted(b))
        out[k] = Histogram(bounds, tuple(b[x] for x in bounds), sums.get(k, math.nan), counts.get(k, b[bounds[-1]]))
    return out


def _summaries(
    sources: list[_Source], src: SignalSource, m: MetricMap, scale: float
) -> dict[ModelKey, SummaryReading]:
    qs: dict[ModelKey, dict[float, float]] = {}
    sums: dict[ModelKey, float] = {}
    counts: dict[ModelKey, float] = {}
    for so in sources:
        for s in so.family.samples:
            labels = dict(s.labels)
            q = labels.pop("quantile", None)
            if not src.matches(labels):
                continue
            k = _key(labels, m)
            if q is not None and math.isfinite(s.value):
                qs.setdefault(k, {}).setdefault(float(q), float(s.value) * scale)  # quantiles never add up
            elif s.name.endswith("_sum"):
                sums[k] = sums.get(k, 0.0) + float(s.value) * scale
            elif s.name.endswith("_count"):
                counts[k] = counts.get(k, 0.0) + float(s.value)
    keys = qs.keys() | sums.keys()
    return {k: SummaryReading(qs.get(k, {}), sums.get(k, math.nan), counts.get(k, math.nan)) for k in keys}


class ReadingWindow:
    """The readings of the last ``seconds``; interval figures are newest minus oldest (as ``rate()`` does)."""

    def __init__(self, seconds: float = 120.0) -> None:
        self.seconds = float(seconds)
        self._readings: deque[ServerReading] = deque()

    def add(self, r: ServerReading) -> None:
        self._readings.append(r)
        while len(self._readings) > 2 and self._readings[0].at < r.at - self.seconds:
            self._readings.popleft()

    @property
    def newest(self) -> ServerReading | None:
        return self._readings[-1] if self._readings else None

    def _ends(self, key: ModelKey) -> tuple[ModelReading | None, ModelReading | None]:
        """The series at the window's first and last reading; a series the first reading lacks did not
        exist yet, i.e. started from zero (None)."""
        if not self._readings:
            return None, None
        return self._readings[0].models.get(key), self._readings[-1].models.get(key)

    def owner(self, key: ModelKey, sig: Signal) -> ModelKey | None:
        """``key`` if its series carry ``sig``, else the model's unversioned series, else the server-wide
        series (no model label)."""
        newest = self.newest
        if newest is None:
            return None
        for k in (key, (key[0], ""), SERVER_WIDE):
            r = newest.models.get(k)
            if r is not None and any(sig in d for d in (r.counters, r.gauges, r.histograms, r.summaries, r.pairs)):
                return k
        return None

    def latest(self, key: ModelKey, sig: Signal) -> float | None:
        """The newest counter or gauge value of ``sig`` (falling back to the server-wide series)."""
        k = self.owner(key, sig)
        if k is None or self.newest is None:
            return None
        r = self.newest.models[k]
        return r.counters.get(sig, r.gauges.get(sig))

    def interval_histogram(self, key: ModelKey, sig: Signal) -> Histogram | None:
        k = self.owner(key, sig)
        if k is None:
            return None
        oldest, newest = self._ends(k)
        if newest is None or sig not in newest.histograms:
            return None
        h = newest.histograms[sig]
        if oldest is None or oldest is newest or sig not in oldest.histograms:
            return h  # one reading: everything the server has seen so far
        delta = h.minus(oldest.histograms[sig])
        return h if delta is None else delta

    def quantiles(self, key: ModelKey, sig: Signal) -> dict[float, float]:
        """Quantiles of ``sig`` over the window: from the histogram's interval delta, or a summary's own."""
        h = self.interval_histogram(key, sig)
        if h is not None:
            out = {q: h.quantile(q) for q in QUANTILES}
            return {q: v for q, v in out.items() if v is not None and math.isfinite(v)}
        k = self.owner(key, sig)
        newest = self._ends(k)[1] if k is not None else None
        if newest is not None and sig in newest.summaries:
            return {q: v for q, v in newest.summaries[sig].quantiles.items() if math.isfinite(v)}
        return {}

    def mean(self, key: ModelKey, sig: Signal) -> float | None:
        """Mean per interval: a counter pair's Δsum/Δcount, else a histogram's or summary's."""
        k = self.owner(key, sig)
        if k is None:
            return None
        oldest, newest = self._ends(k)
        if newest is None:
            return None
        for attr in ("pairs", "histograms", "summaries"):
            cur = getattr(newest, attr).get(sig)
            if cur is None:
                continue
            old = getattr(oldest, attr).get(sig) if oldest is not None and oldest is not newest else None
            s, n = cur.sum, cur.count
            if old is not None and old.count <= n and old.sum <= s:
                s, n = s - old.sum, n - old.count
            if n > 0 and math.isfinite(s):
                return s / n
            return None
        return None
