"""Slow faults as signals: a resource that keeps growing, and when it will run out.

``ExhaustionSpec`` watches a usage gauge (resident memory, GPU memory, disk) against its limit gauge
(cgroup or host memory, GPU memory total, filesystem size). Each series feeds a Theil-Sen trend detector
(``detectors.univariate.trend``); the signal is active when, over a full window,

- the growth is significant (Mann-Kendall z at or above ``z_alarm``),
- it is *sustained*: every quarter of the window grows, and the newest quarter at least
  ``min_persistence`` times as fast as the steepest (a cache warming up grows fast, then levels off:
  it never fires), and
- at the Theil-Sen slope, the limit is reached within ``horizon_seconds``.

The reading's ``value`` is the number of seconds until action is due: the forecast exhaustion minus
``lead_seconds`` (at most 0: act now), so a rule can say "restart once it is due" and the incident
opens, with the forecast in its explanation, long before that.

    >>> spec = ExhaustionSpec("memory_leak", "model_process_resident_memory_bytes",
    ...                       "model_process_memory_limit_bytes", window_seconds=1800)
    >>> reading = spec.observe(source, "digits", now, 10.0)          # doctest: +SKIP
    >>> spec.forecast("digits").exhausts_at                         # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from detectors.univariate.trend import TheilSen, Trend, trend
from diagnosis.signals import SignalReading, SignalSpec, SourceLike, _fmt

# Labels that identify the watched model, not one of its resources (a GPU, a filesystem path).
_MODEL_LABELS = frozenset({"model", "version"})
# One series of a model: its labels other than the model's own (a GPU, a filesystem path); () for none.
SeriesKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Forecast:
    """When a growing resource reaches its limit, and when to act so that it never does."""

    at: float                       # time of the newest point
    level: float                    # usage now
    slope_per_second: float         # Theil-Sen slope of the window
    limit: float
    limit_source: str               # where the limit came from ("cgroup", "host", "gpu", "configured", ...)
    seconds_to_exhaustion: float
    lead_seconds: float

    @property
    def exhausts_at(self) -> float:
        return self.at + self.seconds_to_exhaustion

    @property
    def act_by(self) -> float:
        return self.exhausts_at - self.lead_seconds

    @property
    def seconds_until_due(self) -> float:
        return max(0.0, self.seconds_to_exhaustion - self.lead_seconds)

    def to_dict(self) -> dict[str, float | str]:
        """JSON-able, for the evidence (the incident plot draws it)."""
        return {"at": self.at, "level": self.level, "slope_per_second": self.slope_per_second,
                "limit": self.limit, "limit_source": self.limit_source,
                "seconds_to_exhaustion": self.seconds_to_exhaustion, "exhausts_at": self.exhausts_at,
                "act_by": self.act_by, "lead_seconds": self.lead_seconds}


def forecast_exhaustion(at: float, level: float, slope: float, limit: float, limit_source: str,
                        lead_seconds: float) -> Forecast:
    """Linear extrapolation of ``level`` at ``slope`` to ``limit``; infinite when not growing."""
    headroom = limit - level
    if headroom <= 0.0:
        tte = 0.0
    elif slope > 0.0:
        tte = headroom / slope
    else:
        tte = math.inf
    return Forecast(at, level, slope, limit, limit_source, tte, lead_seconds)


def sustained_growth(tr: Trend, z_alarm: float, min_persistence: float, min_segment_z: float = 2.0,
                     min_evenness: float = 0.1) -> bool:
    """Significant growth over the window, in every quarter of it, not slowing down, and even.

    Every quarter must grow (so growth that started late in the window waits for a full window), the
    newest quarter must grow at least ``min_persistence`` times as fast as the steepest one (so growth
    that levels off, a cache warming up, never counts), and the slowest quarter at least ``min_evenness``
    times as fast as the steepest (a block of memory taken at once on top of slow drift is a step, which
    the memory-pressure signal judges, not a leak).
    """
    return (tr.z >= z_alarm and tr.slope > 0.0 and tr.grows_throughout(min_segment_z)
            and tr.persistence >= min_persistence and tr.evenness >= min_evenness)


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%S UTC")


def _amount(x: float, unit: str) -> str:
    """Bytes in binary multiples (760 MiB, 1.4 GiB); other units as signals print them."""
    if unit != "B" or not math.isfinite(x):
        return f"{_fmt(x)}{unit}"
    for scale, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {name}"
    return f"{x:.0f} B"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(slots=True)
class _Series:
    detector: TheilSen
    last: float = math.nan


@dataclass(slots=True)
class _ExhaustionState:
    cursor: float
    series: dict[SeriesKey, _Series] = field(default_factory=dict)
    onset: float | None = None
    quiet_run: int = 0
    floor: float = math.nan          # usage when the episode started (what a fix must bring it back to)
    forecast: Forecast | None = None
    trend: Trend | None = None
    key: SeriesKey = ()
    recent: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=600))  # (t, level, growing)
    since: float = -math.inf         # points before this are another process's (a restart): never trended
    newest: float = -math.inf        # time of the newest finite sample, trended or not


class ExhaustionSpec(SignalSpec):
    """A usage gauge growing steadily toward its limit gauge (or a configured limit), with a forecast.

    ``limits`` maps a model to a configured limit used when no limit series is scraped. A series that
    drops by more than ``reset_drop`` of its level (a restart, a freed cache) starts a new window.
    """

    def __init__(self, name: str, metric: str, limit_metric: str, matchers: dict[str, str] | None = None, *,
                 window_seconds: float = 1800.0, min_points: int = 12, z_alarm: float = 3.0,
                 min_persistence: float = 0.5, horizon_seconds: float = 86_400.0, lead_seconds: float = 1800.0,
                 limits: dict[str, float] | None = None, clear: int = 3, reset_drop: float = 0.25,
                 free: bool = False, what: str = "resident memory", unit: str = "B", limit_name: str = "scraped",
                 per_process: bool = False):
        super().__init__(name)
        # The usage belongs to the serving process (memory, not a disk): a restart starts it over, so the
        # window restarts too, after the new process's warm-up (see ``restarted``).
        self.per_process = per_process
        if window_seconds <= 0 or horizon_seconds <= 0 or lead_seconds < 0:
            raise ValueError("window_seconds and horizon_seconds must be > 0, lead_seconds >= 0")
        if min_points < 6:
            raise ValueError(f"min_points must be >= 6 (two halves of three), got {min_points}")
        self.metric = metric
        self.limit_metric = limit_metric
        self.matchers = dict(matchers or {})
        self.window = float(window_seconds)
        self.min_points = int(min_points)
        self.z_alarm = float(z_alarm)
        self.min_persistence = float(min_persistence)
        self.horizon = float(horizon_seconds)
        self.lead = float(lead_seconds)
        self.limits = dict(limits or {})
        self.clear = int(clear)
        self.reset_drop = float(reset_drop)
        self.free = free       # the metric is what is left (free bytes): usage = limit - metric
        self.limit_name = limit_name   # what the limit is, when its series has no ``source`` label
        self.what = what
        self.unit = unit
        self._state: dict[str, _ExhaustionState] = {}

    def forget_model(self, model: str) -> None:
        self._state.pop(model, None)

    def models(self) -> set[str]:
        return set(self._state)

    def restarted(self, model: str, settled_at: float) -> None:
        """The model's server restarted; its usage is trended again only from ``settled_at`` (the restart
        plus its warm-up). A new process's memory grows while it warms up (imports, caches, logs filling),
        and a restart that frees less than ``reset_drop`` would otherwise join two processes in one trend."""
        st = self._state.get(model)
        if not self.per_process or st is None or settled_at <= st.since:
            return
        st.since = settled_at
        for ser in st.series.values():
            ser.detector.reset()

    # ------------------------------------------------------------------ reading

    def _detector(self, step: float) -> TheilSen:
        # twice the points a full window holds at ``step``: scrapes may come faster; the window is cut by time
        n = max(self.min_points, min(600, 2 * int(math.ceil(self.window / max(step, 1e-3))) + 1))
        return TheilSen(window=n, z_alarm=self.z_alarm, direction="up", min_periods=self.min_points)

    def _limits(self, source: SourceLike, model: str, now: float, step: float
                ) -> dict[SeriesKey, tuple[float, str]]:
        out: dict[SeriesKey, tuple[float, str]] = {}
        for s in source.read(self.limit_metric, {"model": model, **self.matchers},
                             now - max(60.0, 5 * step), now, step):
            vals = [v for v in s.values if math.isfinite(v) and v > 0]
            if vals:
                key = tuple((k, v) for k, v in s.labels if k not in _MODEL_LABELS and k != "source")
                out[key] = (vals[-1], dict(s.labels).get("source", self.limit_name))
        return out

    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        st = self._state.get(model) or self._state.setdefault(model, _ExhaustionState(cursor=now - self.window))
        limits = self._limits(source, model, now, step)
        for s in source.read(self.metric, {"model": model, **self.matchers}, st.cursor, now, step):
            key = tuple((k, v) for k, v in s.labels if k not in _MODEL_LABELS)
            total = limits.get(key)
            if self.free and total is None:
                continue          # free space means nothing without the size it is free of
            ser = st.series.get(key)
            if ser is None:
                ser = st.series[key] = _Series(self._detector(step))
            for t, v in zip(s.timestamps, s.values):
                if t <= st.cursor or not math.isfinite(v):
                    continue
                if self.free:
                    v = total[0] - v   # type: ignore[index]
                st.newest = max(st.newest, t)
                if t < st.since:
                    ser.last = v               # the level counts (recovery); the warm-up is never trended
                    continue
                if ser.last > 0 and v < ser.last * (1.0 - self.reset_drop):
                    ser.detector.reset()       # restarted or freed: the old points say nothing any more
                ser.detector.update(v, t)
                ser.last = v
        st.cursor = now
        if not st.series:
            return SignalReading.no_data(self.name, model, now, "theil_sen",
                                         f"no {self.metric} sample yet" + (f" with its limit {self.limit_metric}"
                                                                          if self.free else ""))
        best: tuple[Forecast, Trend, SeriesKey] | None = None
        newest = st.newest if math.isfinite(st.newest) else None
        if newest is None:
            return SignalReading.no_data(self.name, model, now, "theil_sen", f"no finite {self.metric} sample yet")
        missing_limit = False
        growing_any = False
        for key, ser in st.series.items():
            ts, xs = ser.detector.points()
            if ts.size == 0:
                continue
            keep = ts >= ts[-1] - self.window
            ts, xs = ts[keep], xs[keep]
            if ts.size < self.min_points or ts[-1] - ts[0] < 0.8 * self.window:
                continue
            tr = trend(ts, xs)
            if not sustained_growth(tr, self.z_alarm, self.min_persistence):
                continue
            growing_any = True
            limit = limits.get(key) or (limits.get(()) if len(limits) == 1 else None)
            if limit is None and model in self.limits:
                limit = (self.limits[model], "configured")
            if limit is None:
                missing_limit = True
                continue
            level = float(np.median(xs[-3:]))
            fc = forecast_exhaustion(float(ts[-1]), level, tr.slope, limit[0], limit[1], self.lead)
            if best is None or fc.seconds_to_exhaustion < best[0].seconds_to_exhaustion:
                best = (fc, tr, key)
        forecast_now = best is not None and best[0].seconds_to_exhaustion <= self.horizon
        level_now = max((ser.last for ser in st.series.values() if math.isfinite(ser.last)), default=math.nan)
        st.recent.append((now, level_now, growing_any))
        if forecast_now:
            assert best is not None
            st.quiet_run = 0
            if st.onset is None:
                st.onset = now
                st.floor = _first_value(st, best[2])
            st.forecast, st.trend, st.key = best
        else:
            st.quiet_run += 1
            if st.onset is not None and st.quiet_run >= self.clear:
                st.onset = None
        # An episode ends after ``clear`` evaluations without a forecast, not on the first noisy one.
        active = st.onset is not None
        if best is None and active and st.forecast is not None and st.trend is not None:
            best = (st.forecast, st.trend, st.key)
        if best is not None:
            fc, tr, key = best
            where = "".join(f" {k}={v}" for k, v in key)
            summary = (f"{self.what}{where} {_amount(fc.level, self.unit)} grows "
                       f"{_amount(fc.slope_per_second, self.unit)}/s (Theil-Sen over {tr.span_seconds:.0f}s, "
                       f"Mann-Kendall z={tr.z:.1f}, newest quarter at {tr.persistence:.2f}x the steepest); the "
                       f"{fc.limit_source} limit {_amount(fc.limit, self.unit)} is reached in "
                       f"{_duration(fc.seconds_to_exhaustion)} (at {_clock(fc.exhausts_at)}); "
                       + (f"action due now (within the {_duration(self.lead)} lead)" if fc.seconds_until_due <= 0
                          else f"action due at {_clock(fc.act_by)}, {_duration(self.lead)} ahead"))
            score = min(1.0, max(0.0, 1.0 - 0.01 ** (tr.z / self.z_alarm)))
            return SignalReading(self.name, model, newest, active, score if active else 0.0,
                                 fc.seconds_until_due, st.onset, summary, "theil_sen", statistic=tr.slope)
        if missing_limit:
            summary = (f"{self.what} grows steadily but no limit is known ({self.limit_metric} is not scraped "
                       f"and no limit is configured for {model}): no forecast")
        elif now < st.since:
            summary = (f"{self.what} {_amount(level_now, self.unit)}: the restarted process warms up; trended "
                       f"again from {_clock(st.since)}")
        else:
            summary = f"{self.what} {_amount(level_now, self.unit)}: no sustained growth toward its limit"
        return SignalReading(self.name, model, newest, False, 0.0, math.inf if missing_limit else self.horizon,
                             None, summary, "theil_sen")

    def forecast(self, model: str) -> Forecast | None:
        """The forecast behind the current (or last) episode of ``model``."""
        st = self._state.get(model)
        return st.forecast if st is not None else None

    def recovered(self, source: SourceLike, model: str, since: float, now: float,
                  version: str | None = None) -> bool | None:
        """Recovered once usage after ``since`` is back below halfway from the episode's floor and not growing."""
        st = self._state.get(model)
        if st is None:
            return None
        after = [(t, lvl, g) for t, lvl, g in st.recent if since < t <= now and math.isfinite(lvl)]
        if len(after) < self.clear:
            return None
        tail = after[-self.clear:]
        if any(g for _, _, g in tail):
            return False
        peak = st.forecast.level if st.forecast is not None else math.nan
        if not (math.isfinite(st.floor) and math.isfinite(peak)) or peak <= st.floor:
            return True
        return float(np.median([lvl for _, lvl, _ in tail])) < st.floor + 0.5 * (peak - st.floor)


def _first_value(st: _ExhaustionState, key: SeriesKey) -> float:
    """The oldest value still in the window of one series (the level the growth started from)."""
    ts, xs = st.series[key].detector.points()
    return float(xs[0]) if xs.size else math.nan


__all__ = ["ExhaustionSpec", "Forecast", "forecast_exhaustion", "sustained_growth"]
