"""Exponentially weighted mean and variance; scores the standardized one-step-ahead residual."""
from __future__ import annotations

import math

import numpy as np
from scipy import signal

from detectors.base import Detector, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import (
    Z99,
    batch_points,
    check_direction,
    z_to_score_array,
)

_UP, _DOWN, _BOTH = Direction.UP, Direction.DOWN, Direction.BOTH
_NORMAL, _ANOMALOUS = DetectorState.NORMAL, DetectorState.ANOMALOUS
_ALARM = Detector.alarm_threshold
_SQRT2 = math.sqrt(2.0)
_sqrt, _erf = math.sqrt, math.erf


@register
class EWMA(Detector):
    """EWMA mean/variance z-score, calibrated to [0, 1] (0.99 exactly at ``|z| = z_alarm``).

    Each point is scored against the mean and variance learned from the points before it, then joins
    them with weight ``alpha``. The first ``warmup`` points score 0 (state WARMUP).

    >>> d = EWMA(alpha=0.05, z_alarm=4.0)
    >>> for t in range(200):
    ...     _ = d.update(float(t % 2), t)
    >>> d.update(5.0) >= d.alarm_threshold
    True
    """

    name = "ewma"
    state_keys = ("_n", "_mean", "_var")

    def __init__(self, alpha: float = 0.05, z_alarm: float = 4.0, direction: str = "both",
                 warmup: int = 30) -> None:
        if not 0.0 < alpha < 1.0:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        if not z_alarm > 0:
            raise InvalidInput(f"z_alarm must be > 0, got {z_alarm}")
        if warmup < 2:
            raise InvalidInput(f"warmup must be >= 2, got {warmup}")
        self.alpha = float(alpha)
        self.z_alarm = float(z_alarm)
        self.watch = check_direction(direction)
        self.warmup = int(warmup)
        self._c = Z99 / self.z_alarm                # z_to_score scale, bound once
        super().__init__()

    def reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._var = 0.0
        self.score = 0.0
        self.state = self.state.WARMUP
        self.direction = Direction.BOTH

    def update(self, value: float, timestamp: float | None = None) -> float:
        # hot path: the NaN check, z_to_score and _judge inlined, enum members bound once
        try:
            x = float(value)
        except (TypeError, ValueError):
            return self._invalid()
        if x - x != 0.0:            # NaN or +-inf
            return self._invalid()
        n = self._n
        if n == 0:
            self._mean = x
            self._n = 1
            return self._judge(0.0, False)
        mean = self._mean
        var = self._var
        d = x - mean
        a = self.alpha
        incr = a * d
        self._mean = mean + incr
        self._var = (1.0 - a) * (var + d * incr)
        self._n = n + 1
        if n < self.warmup:
            return self._judge(0.0, False)
        sd = _sqrt(var)
        floor = 1e-9 * (mean if mean > 1.0 else -mean if mean < -1.0 else 1.0)
        z = d / (sd if sd > floor else floor)
        watch = self.watch
        if watch is _BOTH:
            zz = z if z >= 0.0 else -z
        elif watch is _UP:
            zz = z if z > 0.0 else 0.0
        else:
            zz = -z if z < 0.0 else 0.0
        score = _erf(zz * self._c / _SQRT2)
        if d != 0.0:
            self.direction = _UP if d > 0 else _DOWN
        self.score = score
        self.state = _ANOMALOUS if score >= _ALARM else _NORMAL
        return score

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Vectorized equivalent of ``update`` on every value (linear recursions run through lfilter)."""
        values, out, valid = batch_points(self, values)
        v = values[valid]
        if len(v) == 0:
            return out
        scores = np.zeros(len(v))
        off = 0
        if self._n == 0:
            self.update(v[0])
            off = 1
        rest = v[off:]
        if len(rest):
            a = self.alpha
            b = 1.0 - a
            # mean_t = b*mean_{t-1} + a*x_t ; prev mean of point t is mean_{t-1}
            means, _ = signal.lfilter([a], [1.0, -b], rest, zi=[b * self._mean])
            prev_mean = np.concatenate([[self._mean], means[:-1]])
            d = rest - prev_mean
            # var_t = b*var_{t-1} + b*a*d_t^2
            vars_, _ = signal.lfilter([b * a], [1.0, -b], d * d, zi=[b * self._var])
            prev_var = np.concatenate([[self._var], vars_[:-1]])
            sd = np.sqrt(np.maximum(prev_var, 0.0))
            floor = 1e-9 * np.maximum(1.0, np.abs(prev_mean))
            z = d / np.where(sd > floor, sd, floor)
            s = z_to_score_array(z, self.watch, self.z_alarm)
            counts = self._n + np.arange(len(rest))          # points seen before each one
            warm = counts >= self.warmup
            s[~warm] = 0.0
            scores[off:] = s
            nz = np.flatnonzero(warm & (d != 0))
            if len(nz):
                self.direction = Direction.UP if d[nz[-1]] > 0 else Direction.DOWN
            self._mean = float(means[-1])
            self._var = float(max(vars_[-1], 0.0))
            self._n += len(rest)
            self._judge(float(s[-1]), bool(warm[-1]))
        out[valid] = scores
        if not valid[-1]:
            self._invalid()
        return out
