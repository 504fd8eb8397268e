"""From metric series to signals: each SignalSpec turns a Source's samples into a reading per model.

A reading says whether the signal is active (an anomaly episode), since when, how strongly, and a
summary a person can read. Detectors do the statistics; a spec adds what turns a score into evidence
an on-call engineer trusts: an effect-size floor, confirmation over several points, gating (points
judged anomalous are not learned, so a long fault does not become the new normal until
``relearn_after`` has passed), and a recovery check used to verify remediation.
"""
from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import detectors.univariate  # noqa: F401  (registers the streaming detectors)
from detectors.base import REGISTRY, Detector
from detectors.rates import RateTestResult, proportion_drop_test, proportion_rise_test, wilson_interval


class SeriesLike(Protocol):
    labels: tuple[tuple[str, str], ...]
    timestamps: tuple[float, ...]
    values: tuple[float, ...]


class SourceLike(Protocol):
    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Any]: ...


class SignalState(enum.StrEnum):
    """What a signal says now. ``no_data`` is a state of its own: missing or stale inputs are never healthy."""

    ACTIVE = "active"        # an anomaly episode is going on
    INACTIVE = "inactive"    # fresh data shows the signal healthy
    NO_DATA = "no_data"      # the inputs are missing, stale or too few to judge


@dataclass(frozen=True, slots=True)
class SignalReading:
    signal: str
    model: str
    at: float
    active: bool
    score: float
    value: float
    onset: float | None
    summary: str
    detector: str
    statistic: float | None = None
    p_value: float | None = None
    has_data: bool = True     # False: the reading says only that there is nothing fresh to judge

    @property
    def state(self) -> SignalState:
        if not self.has_data:
            return SignalState.NO_DATA
        return SignalState.ACTIVE if self.active else SignalState.INACTIVE

    @classmethod
    def no_data(cls, signal: str, model: str, at: float, detector: str, why: str) -> SignalReading:
        """A reading that reports missing inputs (never active, never healthy)."""
        return cls(signal, model, at, False, 0.0, math.nan, None, f"no data: {why}", detector, has_data=False)


def _points(series: list[SeriesLike], after: float, version: str | None = None) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for s in series:
        if version is not None and dict(s.labels).get("version", version) != version:
            continue
        pts.extend((t, v) for t, v in zip(s.timestamps, s.values) if t > after)
    pts.sort()
    return pts


def _fmt(x: float) -> str:
    if x == 0 or (1e-3 <= abs(x) < 1e5):
        return f"{x:.3g}"
    return f"{x:.2e}"


class SignalSpec(ABC):
    """How one signal is read from metrics. One instance holds the state of every model it watches."""

    name: str
    horizon_seconds: float = 600.0   # how far back the first read of a model goes

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        """Read what is new for ``model`` and return the current reading; ``SignalState.NO_DATA`` when its
        inputs are missing, stale or too few to judge (never a healthy reading)."""

    @abstractmethod
    def recovered(self, source: SourceLike, model: str, since: float, now: float,
                  version: str | None = None) -> bool | None:
        """Whether the signal is healthy on data after ``since``; None when there is not enough data yet."""

    def baseline(self, model: str) -> dict[str, Any] | None:
        """What this signal learned about ``model`` (JSON-serializable), so a restart need not relearn it."""
        return None

    def restore_baseline(self, model: str, saved: dict[str, Any], now: float) -> None:
        """Start ``model`` from a saved baseline instead of a warm-up (before its first ``observe``)."""
        return None   # nothing learned, nothing to restore (threshold and counter signals)

    @abstractmethod
    def forget_model(self, model: str) -> None:
        """Drop everything held for ``model`` (it has not been seen for long; save its baseline first)."""

    @abstractmethod
    def models(self) -> set[str]:
        """The models this signal holds state for."""


# ---------------------------------------------------------------- level signals (latency, CPU, memory)


@dataclass(slots=True)
class _LevelState:
    detector: Detector
    cursor: float
    baseline: deque[float] = field(default_factory=lambda: deque(maxlen=120))
    run: list[tuple[float, float, float]] = field(default_factory=list)   # anomalous points (t, v, score)
    normal_run: int = 0
    active_since: float | None = None
    recent: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=600))   # (t, anomalous)
    last: tuple[float, float, float] = (0.0, math.nan, 0.0)


class LevelSpec(SignalSpec):
    """A gauge judged against its own learned baseline by a streaming detector (robust z by default).

    A point is anomalous when the detector alarms *and* the value exceeds the baseline median by both
    ``min_ratio`` and ``min_delta`` (so a quiet series with a tiny MAD does not page anyone).
    """

    def __init__(self, name: str, metric: str, matchers: dict[str, str] | None = None, *,
                 detector: str = "robust_z", detector_params: dict[str, Any] | None = None,
                 min_ratio: float = 2.0, min_delta: float = 0.0, confirm: int = 2, clear: int = 3,
                 relearn_after: float = 900.0, unit: str = "", stale_seconds: float = 30.0):
        super().__init__(name)
        self.stale = stale_seconds
        self.metric = metric
        self.matchers = dict(matchers or {})
        self.detector_name = detector
        self.detector_params = dict(detector_params or {"window": 120, "z_alarm": 4.0, "direction": "up",
                                                         "min_periods": 20})
        self.min_ratio = min_ratio
        self.min_delta = min_delta
        self.confirm = confirm
        self.clear = clear
        self.relearn_after = relearn_after
        self.unit = unit
        self._state: dict[str, _LevelState] = {}

    def forget_model(self, model: str) -> None:
        self._state.pop(model, None)

    def models(self) -> set[str]:
        return set(self._state)

    def _new_state(self, now: float) -> _LevelState:
        det = REGISTRY[self.detector_name](**self.detector_params)
        return _LevelState(detector=det, cursor=now - self.horizon_seconds)

    def _baseline_median(self, st: _LevelState) -> float:
        if not st.baseline:
            return math.nan
        xs = sorted(st.baseline)
        return float(xs[len(xs) // 2])

    def _judge(self, st: _LevelState, t: float, v: float) -> tuple[bool, float]:
        probe = Detector.restore(st.detector.checkpoint())
        score = probe.update(v, t)
        base = self._baseline_median(st)
        big_enough = (not math.isnan(base) and v >= base * self.min_ratio and v - base >= self.min_delta)
        anomalous = score >= probe.alarm_threshold and big_enough
        if not anomalous:
            st.detector = probe          # learn only from points judged normal
            st.baseline.append(v)
        return anomalous, score

    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        st = self._state.get(model) or self._state.setdefault(model, self._new_state(now))
        series = source.read(self.metric, {"model": model, **self.matchers}, st.cursor, now, step)
        pts = _points(series, st.cursor)
        for t, v in pts:
            st.cursor = t
            if not math.isfinite(v):
                continue
            anomalous, score = self._judge(st, t, v)
            st.recent.append((t, anomalous))
            st.last = (t, v, score)
            if anomalous:
                st.run.append((t, v, score))
                st.normal_run = 0
                if st.active_since is None and len(st.run) >= self.confirm:
                    st.active_since = st.run[0][0]
            else:
                st.normal_run += 1
                if st.normal_run >= self.clear or st.active_since is None:
                    st.run.clear()
                    if st.normal_run >= self.clear:
                        st.active_since = None
            if st.active_since is not None and t - st.active_since > self.relearn_after:
                # The fault outlived any remediation window: accept the new level rather than page forever.
                st.detector.reset()
                st.baseline.clear()
                st.run.clear()
                st.active_since = None
        if st.last[0] == 0.0:
            return SignalReading.no_data(self.name, model, now, self.detector_name,
                                         f"no finite {self.metric}{self._sel()} sample yet")
        t, v, score = st.last
        if now - t > self.stale:
            # The series stopped (target down, scrape failing): the last value is not the current state.
            return SignalReading.no_data(self.name, model, now, self.detector_name,
                                         f"newest {self.metric}{self._sel()} sample is {now - t:.0f}s old")
        base = self._baseline_median(st)
        active = st.active_since is not None
        summary = (f"{self.metric}{self._sel()} = {_fmt(v)}{self.unit} vs baseline {_fmt(base)}{self.unit}"
                   + (f" ({v / base:.1f}x)" if base and not math.isnan(base) and base > 0 else ""))
        return SignalReading(self.name, model, t, active, score, v, st.active_since, summary,
                             self.detector_name)

    def baseline(self, model: str) -> dict[str, Any] | None:
        st = self._state.get(model)
        if st is None or not st.baseline:
            return None
        return {"detector": st.detector.checkpoint(), "baseline": list(st.baseline)}

    def restore_baseline(self, model: str, saved: dict[str, Any], now: float) -> None:
        st = self._new_state(now)
        st.detector = Detector.restore(saved["detector"])
        st.baseline.extend(float(v) for v in saved["baseline"])
        self._state[model] = st

    def _sel(self) -> str:
        return "{" + ",".join(f'{k}="{v}"' for k, v in self.matchers.items()) + "}" if self.matchers else ""

    def recovered(self, source: SourceLike, model: str, since: float, now: float,
                  version: str | None = None) -> bool | None:
        st = self._state.get(model)
        if st is None:
            return None
        after = [a for t, a in st.recent if t > since]
        if len(after) < self.clear:
            return None
        return not any(after[-self.clear:])


# ---------------------------------------------------------------- counters that must not move


class CounterIncreaseSpec(SignalSpec):
    """Active while a counter that should stay flat (non-finite outputs, GPU errors) increased recently."""

    def __init__(self, name: str, metric: str, matchers: dict[str, str] | None = None, *,
                 window_seconds: float = 30.0, what: str = "events", quiet_seconds: float = 5.0,
                 stale_seconds: float = 30.0):
        super().__init__(name)
        self.quiet_seconds = quiet_seconds
        self.stale = stale_seconds
        self._sampled: dict[str, float] = {}   # model -> time of its newest sample (fresh data or not)
        self.metric = metric
        self.matchers = dict(matchers or {})
        self.window = window_seconds
        self.what = what
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float]] = {}
        self._increments: dict[str, deque[tuple[float, float]]] = {}
        self._cursor: dict[str, float] = {}
        self._onset: dict[str, float | None] = {}

    def forget_model(self, model: str) -> None:
        for key in [k for k in self._last if k[0] == model]:
            del self._last[key]
        for held in (self._increments, self._cursor, self._onset, self._sampled):
            held.pop(model, None)

    def models(self) -> set[str]:
        return {k[0] for k in self._last} | set(self._increments) | set(self._cursor) | set(self._onset)

    def _ingest(self, source: SourceLike, model: str, now: float, step: float) -> deque[tuple[float, float]]:
        inc = self._increments.setdefault(model, deque(maxlen=10000))
        first_cycle = model not in self._cursor
        cursor = self._cursor.get(model, now - self.horizon_seconds)
        for s in source.read(self.metric, {"model": model, **self.matchers}, cursor, now, step):
            key = (model, s.labels)
            for t, v in zip(s.timestamps, s.values):
                if t <= cursor or not math.isfinite(v):
                    continue
                self._sampled[model] = max(t, self._sampled.get(model, t))
                prev = self._last.get(key)
                if prev is None:
                    d = 0.0 if first_cycle else v      # a series born after we started counted from 0
                else:
                    d = v - prev[1] if v >= prev[1] else v   # a drop is a counter reset
                self._last[key] = (t, v)
                if d > 0:
                    inc.append((t, d))
        self._cursor[model] = now
        return inc

    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        inc = self._ingest(source, model, now, step)
        sampled = self._sampled.get(model)
        if sampled is None or now - sampled > self.stale:
            self._onset[model] = None
            why = (f"no {self.metric} sample yet" if sampled is None
                   else f"newest {self.metric} sample is {now - sampled:.0f}s old")
            return SignalReading.no_data(self.name, model, now, "counter_increase", why)
        recent = [(t, d) for t, d in inc if t > now - self.window]
        total = sum(d for _, d in recent)
        active = total > 0
        if active and self._onset.get(model) is None:
            self._onset[model] = recent[0][0]
        elif not active:
            self._onset[model] = None
        summary = f"{total:g} {self.what} in the last {self.window:g}s"
        return SignalReading(self.name, model, now, active, 1.0 if active else 0.0, total,
                             self._onset.get(model), summary, "counter_increase")

    def recovered(self, source: SourceLike, model: str, since: float, now: float,
                  version: str | None = None) -> bool | None:
        # Increments keep arriving for a few scrapes after a fix (requests served before it, scrape lag),
        # so recovery means: no increase for ``quiet_seconds`` after the action.
        inc = self._increments.get(model, ())
        sampled = self._sampled.get(model)
        # Quiet counts only on samples: no increase is recovery when the counter was read after the quiet
        # period, never when it simply stopped arriving.
        if now - since < self.quiet_seconds or sampled is None or sampled - since < self.quiet_seconds \
                or now - sampled > self.stale:
            return None
        last = max((t for t, _ in inc), default=None)
        if last is None or last <= since:
            return True
        return bool(now - last >= self.quiet_seconds)


# ---------------------------------------------------------------- gauges with a fixed meaning


class GaugeThresholdSpec(SignalSpec):
    """Active when a gauge with a fixed meaning crosses a threshold (flags, drift decisions, temperatures)."""

    def __init__(self, name: str, metric: str, matchers: dict[str, str] | None = None, *,
                 op: str = "gt", threshold: float = 0.0, confirm: int = 1, clear: int = 2,
                 stale_seconds: float = 30.0, describe: str = "{value}"):
        super().__init__(name)
        if op not in ("gt", "gte", "lt", "lte"):
            raise ValueError(f"op must be gt, gte, lt or lte, got {op!r}")
        self.metric = metric
        self.matchers = dict(matchers or {})
        self.op = op
        self.threshold = threshold
        self.confirm = confirm
        self.clear = clear
        self.stale = stale_seconds
        self.describe = describe
        self._hist: dict[str, deque[tuple[float, float, bool]]] = {}   # (t, value, breached)
        self._cursor: dict[str, float] = {}
        self._onset: dict[str, float | None] = {}
        self._last_value: dict[str, float] = {}

    def forget_model(self, model: str) -> None:
        for held in (self._hist, self._cursor, self._onset, self._last_value):
            held.pop(model, None)

    def models(self) -> set[str]:
        return set(self._hist) | set(self._cursor) | set(self._onset) | set(self._last_value)

    def _breach(self, v: float) -> bool:
        th = self.threshold
        return {"gt": v > th, "gte": v >= th, "lt": v < th, "lte": v <= th}[self.op]

    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        cursor = self._cursor.get(model, now - self.stale)
        hist = self._hist.setdefault(model, deque(maxlen=600))
        by_time: dict[float, list[float]] = {}
        for s in source.read(self.metric, {"model": model, **self.matchers}, cursor, now, step):
            for t, v in zip(s.timestamps, s.values):
                if t > cursor and math.isfinite(v):
                    by_time.setdefault(t, []).append(v)
        for t in sorted(by_time):
            vals = by_time[t]
            # The worst series at that instant decides (any GPU, any feature).
            worst = max(vals) if self.op in ("gt", "gte") else min(vals)
            hist.append((t, worst, self._breach(worst)))
            self._cursor[model] = t
        if not hist or now - hist[-1][0] > self.stale:
            self._onset[model] = None
            why = (f"no {self.metric} sample yet" if not hist
                   else f"newest {self.metric} sample is {now - hist[-1][0]:.0f}s old")
            return SignalReading.no_data(self.name, model, now, "threshold", why)
        tail = list(hist)
        breaches = [b for _, _, b in tail[-self.confirm:]]
        normals = [not b for _, _, b in tail[-self.clear:]]
        onset = self._onset.get(model)
        if onset is None and len(breaches) >= self.confirm and all(breaches):
            onset = tail[-self.confirm][0]
        elif onset is not None and len(normals) >= self.clear and all(normals):
            onset = None
        self._onset[model] = onset
        t, v, _ = tail[-1]
        summary = self.describe.format(value=_fmt(v), threshold=_fmt(self.threshold), metric=self.metric)
        return SignalReading(self.name, model, t, onset is not None, 1.0 if onset is not None else 0.0, v,
                             onset, summary, "threshold")

    def recovered(self, source: SourceLike, model: str, since: float, now: float,
                  version: str | None = None) -> bool | None:
        after = [b for t, _, b in self._hist.get(model, ()) if t > since]
        if len(after) < self.clear:
            return None
        return not any(after[-self.clear:])


# ---------------------------------------------------------------- proportions (accuracy, error rate)


@dataclass(slots=True)
class _PropState:
    increments: deque[tuple[float, str, float, float]] = field(
        default_factory=lambda: deque(maxlen=20000))                          # (t, version, d_num, d_den)
    last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    cursor: float | None = None
    base_num: float = 0.0
    base_den: float = 0.0
    significant_run: int = 0
    clear_run: int = 0
    onset: float | None = None


class ProportionSpec(SignalSpec):
    """A rate from two counters (correct/labeled, errors/requests) tested against its learned baseline.

    Each cycle takes the counts of the last ``window_seconds`` and runs an exact one-sided binomial test
    against ``baseline -/+ margin`` (a drop for accuracy, a rise for errors). The baseline pools healthy
    increments with exponential forgetting; it is frozen while the signal is active. Labels arrive late
    and only for some requests: the test runs on whatever has arrived and waits for ``min_count``.
    """

    def __init__(self, name: str, numerator: str, denominator: str, *, direction: str,
                 window_seconds: float = 60.0, margin: float = 0.05, alpha: float = 1e-3,
                 min_count: int = 30, min_baseline: int = 100, forget: float = 0.995, confirm: int = 1,
                 clear: int = 2, what: str = "accuracy"):
        super().__init__(name)
        if direction not in ("drop", "rise"):
            raise ValueError("direction must be 'drop' or 'rise'")
        self.num, self.den = numerator, denominator
        self.direction = direction
        self.window = window_seconds
        self.margin = margin
        self.alpha = alpha
        self.min_count = min_count
        self.min_baseline = min_baseline
        self.forget = forget
        self.confirm = confirm
        self.clear = clear
        self.what = what
        self._state: dict[str, _PropState] = {}

    def forget_model(self, model: str) -> None:
        self._state.pop(model, None)

    def models(self) -> set[str]:
        return set(self._state)

    def _ingest(self, source: SourceLike, model: str, now: float, step: float) -> tuple[float, float]:
        st = self._state.setdefault(model, _PropState())
        first_cycle = st.cursor is None
        cursor = st.cursor if st.cursor is not None else now - self.horizon_seconds
        new_num = new_den = 0.0
        per_t: dict[tuple[float, str], list[float]] = {}
        for which, metric in ((0, self.num), (1, self.den)):
            for s in source.read(metric, {"model": model}, cursor, now, step):
                key = (metric, s.labels)
                version = dict(s.labels).get("version", "")
                for t, v in zip(s.timestamps, s.values):
                    if t <= cursor or not math.isfinite(v):
                        continue
                    prev = st.last.get(key)
                    d = (0.0 if first_cycle else v) if prev is None else (v - prev if v >= prev else v)
                    st.last[key] = v
                    if d > 0:
                        per_t.setdefault((t, version), [0.0, 0.0])[which] += d
        for (t, version), (dn, dd) in sorted(per_t.items()):
            st.increments.append((t, version, dn, dd))
            new_num += dn
            new_den += dd
        st.cursor = now
        return new_num, new_den

    def baseline(self, model: str) -> dict[str, Any] | None:
        st = self._state.get(model)
        if st is None or st.base_den <= 0:
            return None
        return {"base_num": st.base_num, "base_den": st.base_den}

    def restore_baseline(self, model: str, saved: dict[str, Any], now: float) -> None:
        num, den = float(saved["base_num"]), float(saved["base_den"])
        if math.isfinite(num) and math.isfinite(den) and 0 <= num <= den:
            self._state[model] = _PropState(base_num=num, base_den=den)

    def _baseline(self, st: _PropState) -> float | None:
        if st.base_den < self.min_baseline:
            return None
        return st.base_num / st.base_den

    def _test(self, k: int, n: int, base: float) -> RateTestResult:
        if self.direction == "drop":
            return proportion_drop_test(k, n, max(base - self.margin, 1e-6), alpha=self.alpha)
        return proportion_rise_test(k, n, min(base + self.margin, 1 - 1e-6), alpha=self.alpha)

    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        new_num, new_den = self._ingest(source, model, now, step)
        st = self._state[model]
        base = self._baseline(st)
        window = [(t, dn, dd) for t, _, dn, dd in st.increments if t > now - self.window]
        k = int(round(sum(dn for _, dn, _ in window)))
        n = int(round(sum(dd for _, _, dd in window)))
        if base is None or n < self.min_count:
            if st.onset is None:
                st.base_num = st.base_num * self.forget + new_num
                st.base_den = st.base_den * self.forget + new_den
            why = (f"{n} counted in the last {self.window:g}s (needs {self.min_count})" if base is not None
                   else f"baseline still learning ({st.base_den:.0f} of {self.min_baseline} counted)")
            return SignalReading.no_data(self.name, model, now, "binomial", why)
        res = self._test(k, n, base)
        observed = k / n if n else math.nan
        if res.significant:
            st.significant_run += 1
            st.clear_run = 0
        else:
            st.significant_run = 0
            st.clear_run += 1
        if st.onset is None and st.significant_run >= self.confirm:
            st.onset = now   # when the test first became significant: the window start would predate it
        elif st.onset is not None and st.clear_run >= self.clear:
            st.onset = None
        if st.onset is None and not res.significant:
            st.base_num = st.base_num * self.forget + new_num
            st.base_den = st.base_den * self.forget + new_den
        summary = (f"{self.what} {observed:.3f} over {n} in the last {self.window:g}s vs baseline {base:.3f} "
                   f"(exact binomial p={res.p_value:.2g})")
        score = 1.0 - res.p_value if math.isfinite(res.p_value) else 0.0
        return SignalReading(self.name, model, now, st.onset is not None, score, observed, st.onset, summary,
                             "binomial", statistic=observed, p_value=res.p_value)

    def recovered(self, source: SourceLike, model: str, since: float, now: float,
                  version: str | None = None) -> bool | None:
        st = self._state.get(model)
        if st is None:
            return None
        base = self._baseline(st)
        rows = [(dn, dd) for t, ver, dn, dd in st.increments
                if t > since and (version is None or ver == version)]
        k = int(round(sum(r[0] for r in rows)))
        n = int(round(sum(r[1] for r in rows)))
        if base is None or n < self.min_count:
            return None
        res = self._test(k, n, base)
        observed = k / n
        ok = observed >= base - self.margin if self.direction == "drop" else observed <= base + self.margin
        return ok and not res.significant

    def recovered_by_version(self, model: str, since: float, now: float, version: str,
                             previous: str) -> bool | None:
        """Whether ``version`` (serving since ``since``) undid what ``previous`` lost, on the same inputs.

        Judges what is attributable to the version while something else (a data shift) also holds the rate
        down: ``version``'s rate after ``since`` against ``previous``'s rate over the last ``window`` it
        served before ``since``, not against the healthy baseline. True when their 99% Wilson intervals are
        apart in the healthy direction, False when they overlap, None while either has too few rows.
        """
        st = self._state.get(model)
        if st is None:
            return None

        def counts(rows: list[tuple[float, float]]) -> tuple[int, int]:
            return int(round(sum(r[0] for r in rows))), int(round(sum(r[1] for r in rows)))

        after = counts([(dn, dd) for t, ver, dn, dd in st.increments if t > since and ver == version])
        before = counts([(dn, dd) for t, ver, dn, dd in st.increments
                         if since - 4 * self.window < t <= since and ver == previous])
        if min(after[1], before[1]) < self.min_count:
            return None
        lo_new, hi_new = wilson_interval(*after, confidence=0.99)
        lo_old, hi_old = wilson_interval(*before, confidence=0.99)
        return lo_new > hi_old if self.direction == "drop" else hi_new < lo_old


MONITORING_SIGNAL = "monitoring_down"   # the scrape target failing: evidence about monitoring, not the model


def blind_while_monitoring_down(readings: dict[str, SignalReading]) -> dict[str, SignalReading]:
    """While the model's metrics target failed its latest scrape, every other signal has no data.

    The last samples it exported before failing are not the model's current state (a dead sidecar
    must never read as a healthy model), whatever each signal's own staleness window says.
    """
    mon = readings.get(MONITORING_SIGNAL)
    if mon is None or not mon.has_data or not mon.value < 1:
        return readings
    why = f"the metrics target does not answer ({mon.summary})"
    return {n: r if n == MONITORING_SIGNAL or not r.has_data
            else SignalReading.no_data(n, r.model, r.at, r.detector, why) for n, r in readings.items()}
