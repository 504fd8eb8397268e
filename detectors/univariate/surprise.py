"""The default detector: surprise against a slow EWMA baseline, with a refractory period after alarms."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import signal, special

from detectors.base import Detector, finite_or_none, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import batch_points
from detectors.univariate.seasonal import Seasonal

_LOG2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)


def _tail_score(z: float, gamma: float) -> float:
    # two-sided tail probability p = 2*Phi(-z) in log space; score = 1 - p**gamma
    if z <= 0.0:
        return 0.0
    log_p = math.log(math.erfc(z / _SQRT2)) if z < 30.0 else float(special.log_ndtr(-z)) + _LOG2
    return 1.0 - math.exp(gamma * log_p)


@register
class Surprise(Detector):
    """How surprising a point is against a slow exponentially weighted baseline (the backtest default before ``context``).

    Two experts share one slow baseline (EWMA mean and variance with weight ``alpha``): the point itself,
    ``z1 = (x - mean) / sd``, and a short EWMA of recent points (weight ``alpha_short``),
    ``z2 = (short - mean) / (sd * sqrt(alpha_short / (2 - alpha_short)))``, damped by ``short_weight``.
    A third expert knows the daily cycle: a ``Seasonal`` z-score (``season_buckets`` phases of
    ``season_period`` seconds; phases from timestamps, else from the point count times ``step``),
    damped by ``season_weight`` (0 turns it off).
    With ``z = max(|z1|, short_weight*|z2|, season_weight*|z3|)`` and the two-sided normal tail ``p = 2 Phi(-z)`` the score is
    ``1 - p**gamma``: in [0, 1], monotone in the surprise, and equal to 0.99 exactly at ``p = p_alarm``
    (``gamma = ln 0.01 / ln p_alarm``). After an alarm at ``refractory_p`` (a far stronger level), further
    points that strong are reported with score 0 for ``refractory`` points: an incident is announced once,
    at its onset (NAB rewards the earliest detection per window and charges every false positive).

    >>> d = Surprise()
    >>> for t in range(500):
    ...     _ = d.update(100.0 + (t % 7), t)
    >>> d.update(160.0) >= d.alarm_threshold
    True
    """

    name = "surprise"
    state_keys = ("_n", "_mean", "_var", "_short", "_since_alarm", "seasonal_state")

    def __init__(self, alpha: float = 0.001, alpha_short: float = 0.05, short_weight: float = 0.5,
                 p_alarm: float = 1e-4, refractory: int = 80, refractory_p: float = 1e-8,
                 warmup: int = 100, season_weight: float = 0.8, season_period: float = 86400.0,
                 season_buckets: int = 24, season_alpha: float = 0.05, season_alpha_var: float = 0.002,
                 step: float = 300.0) -> None:
        if not 0.0 < alpha < 1.0 or not 0.0 < alpha_short < 1.0:
            raise InvalidInput(f"alpha and alpha_short must be in (0, 1), got {alpha}, {alpha_short}")
        if not 0.0 < p_alarm < 1.0 or not 0.0 < refractory_p < 1.0:
            raise InvalidInput(f"p_alarm and refractory_p must be in (0, 1), got {p_alarm}, {refractory_p}")
        if refractory < 0 or warmup < 2:
            raise InvalidInput(f"need refractory >= 0 and warmup >= 2, got {refractory}, {warmup}")
        self.alpha = float(alpha)
        self.alpha_short = float(alpha_short)
        self.short_weight = float(short_weight)
        self.p_alarm = float(p_alarm)
        self.refractory = int(refractory)
        self.refractory_p = float(refractory_p)
        self.warmup = int(warmup)
        if season_weight < 0:
            raise InvalidInput(f"season_weight must be >= 0, got {season_weight}")
        self.season_weight = float(season_weight)
        self.season_period = float(season_period)
        self.season_buckets = int(season_buckets)
        self.season_alpha = float(season_alpha)
        self.season_alpha_var = float(season_alpha_var)
        self.step = float(step)
        self._gamma = math.log(0.01) / math.log(self.p_alarm)
        self._refractory_score = 1.0 - self.refractory_p ** self._gamma
        self._short_scale = math.sqrt(self.alpha_short / (2.0 - self.alpha_short))
        super().__init__()

    def _new_seasonal(self) -> Seasonal | None:
        if self.season_weight == 0:
            return None
        return Seasonal(period=self.season_period, buckets=self.season_buckets, step=self.step,
                        alpha=self.season_alpha, alpha_var=self.season_alpha_var)

    @property
    def seasonal_state(self) -> dict[str, Any] | None:
        return None if self._seasonal is None else self._seasonal.checkpoint()

    @seasonal_state.setter
    def seasonal_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self._seasonal = None
            return
        seasonal = Detector.restore(state)
        if not isinstance(seasonal, Seasonal):
            raise InvalidInput(f"seasonal_state restores a {type(seasonal).__name__}, not a Seasonal")
        self._seasonal = seasonal

    def reset(self) -> None:
        self._seasonal = self._new_seasonal()
        self._n = 0
        self._mean = 0.0
        self._var = 0.0
        self._short = 0.0
        self._since_alarm = -1          # points since the last unsuppressed strong alarm; -1 = none yet
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    def update(self, value: float, timestamp: float | None = None) -> float:
        x = finite_or_none(value)
        if x is None:
            return self._invalid()
        if timestamp is not None and not math.isfinite(float(timestamp)):
            timestamp = None
        zs = 0.0
        if self._seasonal is not None:
            self._seasonal.update(x, timestamp)
            zs = self.season_weight * abs(self._seasonal.last_z)
        if self._n == 0:
            self._mean = self._short = x
            self._n = 1
            if self._since_alarm >= 0:
                self._since_alarm += 1
            return self._judge(0.0, False)
        a, b = self.alpha, 1.0 - self.alpha
        mean, var = self._mean, self._var
        d = x - mean
        short = self.alpha_short * x + (1.0 - self.alpha_short) * self._short
        warm = self._n >= self.warmup
        score = 0.0
        suppressed = False
        if warm:
            sd = math.sqrt(var)
            floor = 1e-9 * max(1.0, abs(mean))
            sd = max(floor, sd)
            z1 = abs(d / sd)
            z2 = self.short_weight * abs((short - mean) / (sd * self._short_scale))
            z = max(z1, z2)
            score = _tail_score(max(z, zs), self._gamma)
            if d != 0.0:
                self.direction = Direction.UP if d > 0 else Direction.DOWN
        if self._since_alarm >= 0:
            self._since_alarm += 1
        if score >= self._refractory_score:
            if 0 <= self._since_alarm <= self.refractory:
                score, suppressed = 0.0, True
            else:
                self._since_alarm = 0
        self._mean = a * x + b * mean
        self._var = (a * b) * (d * d) + b * var
        self._short = short
        self._n += 1
        self._judge(score, warm)
        if suppressed:
            self.state = DetectorState.ANOMALOUS
        return score

    def _first(self, x: float) -> float:
        self._mean = self._short = x
        self._n = 1
        if self._since_alarm >= 0:
            self._since_alarm += 1
        return self._judge(0.0, False)

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Vectorized equivalent of ``update`` on every value: three lfilter passes and a sparse loop."""
        values, out, valid = batch_points(self, values)
        pos = np.flatnonzero(valid)
        if len(pos) == 0:
            return out
        v = values[pos]
        zs_all = np.zeros(len(v))
        if timestamps is not None:
            ts = np.asarray(timestamps, dtype=float)
            if ts.shape != values.shape:
                raise InvalidInput(f"{len(ts)} timestamps for {len(values)} values")
            ts_v = ts[pos]
            ts_v = np.where(np.isfinite(ts_v), ts_v, np.nan)
        else:
            ts_v = None
        if self._seasonal is not None:
            if ts_v is not None and not np.all(np.isfinite(ts_v)):
                # rare: fall back to the per-point path for the seasonal member (same numbers)
                zsl = []
                for x, t in zip(v, ts_v):
                    self._seasonal.update(x, None if not np.isfinite(t) else t)
                    zsl.append(self._seasonal.last_z)
                zs_raw = np.asarray(zsl)
            else:
                self._seasonal.score_batch(v, ts_v)
                zs_raw = self._seasonal.last_z_batch
            zs_all = self.season_weight * np.abs(zs_raw)
        off = 0
        if self._n == 0:
            out[pos[0]] = self._first(v[0])
            off = 1
        rest = v[off:]
        if len(rest):
            a, b = self.alpha, 1.0 - self.alpha
            means, _ = signal.lfilter([a], [1.0, -b], rest, zi=[b * self._mean])
            prev_mean = np.concatenate([[self._mean], means[:-1]])
            d = rest - prev_mean
            vars_, _ = signal.lfilter([a * b], [1.0, -b], d * d, zi=[b * self._var])
            prev_var = np.concatenate([[self._var], vars_[:-1]])
            a_s = self.alpha_short
            shorts, _ = signal.lfilter([a_s], [1.0, -(1.0 - a_s)], rest, zi=[(1.0 - a_s) * self._short])
            sd = np.sqrt(prev_var)
            floor = 1e-9 * np.maximum(1.0, np.abs(prev_mean))
            sd = np.where(sd > floor, sd, floor)
            z1 = np.abs(d / sd)
            z2 = self.short_weight * np.abs((shorts - prev_mean) / (sd * self._short_scale))
            z = np.where(z1 >= z2, z1, z2)
            zs = zs_all[off:]
            z = np.where(z >= zs, z, zs)
            warm = (self._n + np.arange(len(rest))) >= self.warmup
            z[~warm] = 0.0
            with np.errstate(divide="ignore"):
                log_p = np.log(special.erfc(z / _SQRT2))
                big = z >= 30.0
                if big.any():
                    log_p[big] = special.log_ndtr(-z[big]) + _LOG2
            s = np.where(z > 0.0, 1.0 - np.exp(self._gamma * log_p), 0.0)
            # refractory period: a sparse sequential pass over the strong alarms only
            since = self._since_alarm
            last_alarm = None if since < 0 else -since      # index (in `rest`) of the last strong alarm
            suppressed_last = False
            for i in np.flatnonzero(s >= self._refractory_score):
                if last_alarm is not None and i - last_alarm <= self.refractory:
                    s[i] = 0.0
                    suppressed_last = i == len(rest) - 1
                else:
                    last_alarm = int(i)
            n_rest = len(rest)
            self._since_alarm = -1 if last_alarm is None else n_rest - 1 - last_alarm
            nz = np.flatnonzero(warm & (d != 0.0))
            if len(nz):
                self.direction = Direction.UP if d[nz[-1]] > 0 else Direction.DOWN
            self._mean = float(means[-1])
            self._var = float(vars_[-1])
            self._short = float(shorts[-1])
            self._n += n_rest
            out[pos[off:]] = s
            self._judge(float(s[-1]), bool(warm[-1]))
            if suppressed_last:
                self.state = DetectorState.ANOMALOUS
        if not valid[-1]:
            self._invalid()
        return out
