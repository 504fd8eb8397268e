"""Thresholds relative to each model: a level signal judged against the model's own learned baseline,
a trend that keeps a creep from dragging that baseline along, and an optional per-model SLO.

A fixed absolute floor (``+50 ms``) suits one model and fails the next: ten times the whole latency of
a model that answers in 5 ms, noise for one that takes 2 s. Here a point counts when it is

- ``min_ratio`` times the learned baseline (median of the points judged healthy) and the detector
  alarms, either the level detector (robust z against recent healthy points) or the trend detector
  (Theil-Sen/Mann-Kendall: a steady creep), and it exceeds the baseline by the configurable ``min_delta``
  floor (0 by default); or
- above the model's SLO, whatever its baseline.

While the series trends upward above its baseline nothing is learned, so a slow creep cannot become the
new normal before it is ``min_ratio`` times the old one. An episode opens once ``confirm`` points in a
row count and they span ``sustain_seconds``.

    >>> spec = RelativeLevelSpec("latency", "model_latency_seconds", {"quantile": "0.9"},
    ...                          min_ratio=3.0, slos={"fraud": 0.050}, sustain_seconds=30)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from detectors.base import REGISTRY, Detector
from detectors.univariate.trend import TheilSen
from diagnosis.signals import LevelSpec, SignalReading, SourceLike, _fmt, _LevelState, _points


@dataclass(slots=True)
class _RelativeState(_LevelState):
    trend: TheilSen | None = None
    trending_since: float | None = None


class RelativeLevelSpec(LevelSpec):
    """A level signal relative to each model's learned baseline, with a creep guard and optional SLOs.

    ``slos`` maps a model to the value above which it is in breach (its SLO for this signal).
    """

    def __init__(self, name: str, metric: str, matchers: dict[str, str] | None = None, *,
                 slos: dict[str, float] | None = None, sustain_seconds: float = 0.0, trend_points: int = 60,
                 trend_z: float = 4.0, **kwargs: Any):
        super().__init__(name, metric, matchers, **kwargs)
        if sustain_seconds < 0:
            raise ValueError(f"sustain_seconds must be >= 0, got {sustain_seconds}")
        bad = {m: v for m, v in (slos or {}).items() if not (isinstance(v, int | float) and v > 0)}
        if bad:
            raise ValueError(f"SLOs must be positive numbers; got {bad}")
        self.slos = {m: float(v) for m, v in (slos or {}).items()}
        self.sustain = float(sustain_seconds)
        self.trend_points = int(trend_points)
        self.trend_z = float(trend_z)

    def _new_state(self, now: float) -> _LevelState:
        det = REGISTRY[self.detector_name](**self.detector_params)
        return _RelativeState(detector=det, cursor=now - self.horizon_seconds,
                              trend=TheilSen(window=self.trend_points, z_alarm=self.trend_z, direction="up",
                                             min_periods=max(3, self.trend_points // 2)))

    def _judge_relative(self, st: _RelativeState, model: str, t: float, v: float) -> tuple[bool, float]:
        assert st.trend is not None
        probe = Detector.restore(st.detector.checkpoint())
        score = probe.update(v, t)
        trend_score = st.trend.update(v, t)
        base = self._baseline_median(st)
        relative = (not math.isnan(base) and base > 0 and v >= base * self.min_ratio
                    and v - base >= self.min_delta)
        level_alarm = score >= probe.alarm_threshold
        creeping = trend_score >= st.trend.alarm_threshold and not math.isnan(base) and v > base
        slo = self.slos.get(model)
        anomalous = (slo is not None and v > slo) or (relative and (level_alarm or creeping))
        if creeping and not anomalous:
            st.trending_since = st.trending_since if st.trending_since is not None else t
        else:
            st.trending_since = None
        # A creep is not learned (it would become the baseline) unless it has gone on for relearn_after.
        frozen = st.trending_since is not None and t - st.trending_since < self.relearn_after
        if not anomalous and not frozen:
            st.detector = probe
            st.baseline.append(v)
        return anomalous, max(score, trend_score) if (relative or slo is not None) else score

    def observe(self, source: SourceLike, model: str, now: float, step: float) -> SignalReading:
        st = self._state.get(model) or self._state.setdefault(model, self._new_state(now))
        assert isinstance(st, _RelativeState)
        series = source.read(self.metric, {"model": model, **self.matchers}, st.cursor, now, step)
        for t, v in _points(series, st.cursor):
            st.cursor = t
            if not math.isfinite(v):
                continue
            anomalous, score = self._judge_relative(st, model, t, v)
            st.recent.append((t, anomalous))
            st.last = (t, v, score)
            if anomalous:
                st.run.append((t, v, score))
                st.normal_run = 0
                if (st.active_since is None and len(st.run) >= self.confirm
                        and t - st.run[0][0] >= self.sustain):
                    st.active_since = st.run[0][0]
            else:
                st.normal_run += 1
                if st.normal_run >= self.clear or st.active_since is None:
                    st.run.clear()
                    if st.normal_run >= self.clear:
                        st.active_since = None
            if st.active_since is not None and t - st.active_since > self.relearn_after:
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
        slo = self.slos.get(model)
        parts = [f"{self.metric}{self._sel()} = {_fmt(v)}{self.unit} vs baseline {_fmt(base)}{self.unit}"]
        if base and not math.isnan(base) and base > 0:
            parts.append(f" ({v / base:.1f}x; threshold {self.min_ratio:g}x)")
        if slo is not None:
            parts.append(f"; SLO {_fmt(slo)}{self.unit} {'breached' if v > slo else 'met'}")
        return SignalReading(self.name, model, t, st.active_since is not None, score, v, st.active_since,
                             "".join(parts), self.detector_name)

    def restore_baseline(self, model: str, saved: dict[str, Any], now: float) -> None:
        st = self._new_state(now)
        st.detector = Detector.restore(saved["detector"])
        st.baseline.extend(float(v) for v in saved["baseline"])
        self._state[model] = st
