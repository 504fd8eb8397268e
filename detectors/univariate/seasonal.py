"""Seasonality-aware z-score: one EWMA baseline per phase bucket of a daily (or weekly) cycle."""
from __future__ import annotations

import math

import numpy as np
from scipy import signal

from detectors.base import Detector, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import as_float_array, check_direction, z_to_score, z_to_score_array
from detectors.univariate._ewm import bias_correction


@register
class Seasonal(Detector):
    """Scores a point against the usual level *for its time of day (or week)*.

    The cycle (``period`` seconds, 86400 = daily, 604800 = weekly) is cut into ``buckets`` phases; each
    phase keeps an EWMA of its values (weight ``alpha``), and one EWMA of squared residuals (weight
    ``alpha_var``) gives the scale. The phase comes from the timestamp, or, without one, from the point
    count times ``step`` seconds. A phase is judged once it has ``min_per_bucket`` values. Score:
    ``erf(|z| 2.5758 / z_alarm / sqrt 2)``, 0.99 exactly at ``|z| = z_alarm``. State is bounded:
    ``buckets`` means.

    >>> import numpy as np
    >>> d = Seasonal(period=86400, buckets=24)
    >>> t = np.arange(0, 7 * 86400, 300.0)
    >>> x = 10 + 5 * np.sin(2 * np.pi * t / 86400)
    >>> s = d.score_batch(x, t)
    >>> d.update(10 + 5 * np.sin(2 * np.pi * (t[-1] + 300) / 86400) + 4, t[-1] + 300) >= d.alarm_threshold
    True
    """

    name = "seasonal"
    state_keys = ("_means", "_counts", "_var", "_n_res", "_n")

    def __init__(self, period: float = 86400.0, buckets: int = 24, step: float = 300.0, alpha: float = 0.2,
                 alpha_var: float = 0.01, z_alarm: float = 4.0, direction: str = "both",
                 min_per_bucket: int = 3, warmup: int = 30) -> None:
        if period <= 0 or step <= 0 or buckets < 1:
            raise InvalidInput("period and step must be > 0 and buckets >= 1")
        if not 0.0 < alpha < 1.0 or not 0.0 < alpha_var < 1.0:
            raise InvalidInput("alpha and alpha_var must be in (0, 1)")
        self.period = float(period)
        self.buckets = int(buckets)
        self.step = float(step)
        self.alpha = float(alpha)
        self.alpha_var = float(alpha_var)
        self.z_alarm = float(z_alarm)
        self.watch = check_direction(direction)
        self.min_per_bucket = int(min_per_bucket)
        self.warmup = int(warmup)
        super().__init__()

    def reset(self) -> None:
        self.last_z = 0.0        # z of the last point (0 while warming up); not state
        self.last_z_batch = np.zeros(0)
        self._means: list[float] = [0.0] * self.buckets     # plain lists: fast scalar access when streaming
        self._counts: list[int] = [0] * self.buckets
        self._var = 0.0          # raw EWMA of squared residuals (bias-corrected when read)
        self._n_res = 0          # residuals folded into _var
        self._n = 0              # valid points seen (phase clock when there are no timestamps)
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    def _bucket(self, ts: float) -> int:
        return int((ts % self.period) / self.period * self.buckets) % self.buckets

    def update(self, value: float, timestamp: float | None = None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return self._invalid()
        if not math.isfinite(x) or (timestamp is not None and not math.isfinite(float(timestamp))):
            return self._invalid()
        ts = float(timestamp) if timestamp is not None else self._n * self.step
        k = self._bucket(ts)
        self._n += 1
        self.last_z = 0.0
        c = self._counts[k]
        if c == 0:
            self._means[k] = x
            self._counts[k] = 1
            return self._judge(0.0, False)
        mean = self._means[k]
        d = x - mean
        warm = c >= self.min_per_bucket and self._n_res >= self.warmup
        score = 0.0
        if warm:
            var = self._var / (1.0 - (1.0 - self.alpha_var) ** self._n_res)
            sd = math.sqrt(var)
            floor = 1e-9 * max(1.0, abs(mean))
            z = d / (max(floor, sd))
            self.last_z = z
            score = z_to_score(z, self.watch, self.z_alarm)
            if d != 0.0:
                self.direction = Direction.UP if d > 0 else Direction.DOWN
        av = self.alpha_var
        self._var = av * (d * d) + (1.0 - av) * self._var
        self._n_res += 1
        self._means[k] = self.alpha * x + (1.0 - self.alpha) * mean
        self._counts[k] = c + 1
        return self._judge(score, warm)

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Vectorized equivalent of ``update``: one lfilter per phase bucket, one for the scale."""
        values = as_float_array(values)
        n = len(values)
        out = np.zeros(n)
        if timestamps is not None:
            ts_all = np.asarray(timestamps, dtype=float)
            if ts_all.shape != values.shape:
                raise InvalidInput(f"{len(ts_all)} timestamps for {n} values")
            valid = np.isfinite(values) & np.isfinite(ts_all)
        else:
            valid = np.isfinite(values)
        pos = np.flatnonzero(valid)
        if len(pos) == 0:
            if n:
                self._invalid()
            return out
        self.last_z_batch = np.zeros(n)
        v = values[pos]
        ts = ts_all[pos] if timestamps is not None else (self._n + np.arange(len(v))) * self.step
        kb = ((ts % self.period) / self.period * self.buckets).astype(np.int64) % self.buckets
        prev_mean = np.empty(len(v))
        count_before = np.empty(len(v), dtype=np.int64)
        a = self.alpha
        order = np.argsort(kb, kind="stable")
        bounds = np.searchsorted(kb[order], np.arange(self.buckets + 1))
        for k in range(self.buckets):
            idx = order[bounds[k]: bounds[k + 1]]
            if len(idx) == 0:
                continue
            xs = v[idx]
            c0 = self._counts[k]
            if c0 == 0:
                # the first value initialises the bucket
                init = xs[0]
                means, _ = signal.lfilter([a], [1.0, -(1.0 - a)], xs[1:], zi=[(1.0 - a) * init])
                prev_mean[idx[0]] = np.nan
                prev_mean[idx[1:]] = np.concatenate([[init], means[:-1]]) if len(xs) > 1 else []
                last = means[-1] if len(xs) > 1 else init
            else:
                m0 = self._means[k]
                means, _ = signal.lfilter([a], [1.0, -(1.0 - a)], xs, zi=[(1.0 - a) * m0])
                prev_mean[idx] = np.concatenate([[m0], means[:-1]])
                last = means[-1]
            count_before[idx] = c0 + np.arange(len(idx))
            self._means[k] = float(last)
            self._counts[k] = c0 + len(idx)
        has_res = count_before > 0
        d = np.where(has_res, v - np.where(has_res, prev_mean, 0.0), 0.0)
        res_idx = np.flatnonzero(has_res)
        scores = np.zeros(len(v))
        if len(res_idx):
            dr = d[res_idx]
            av = self.alpha_var
            vars_, _ = signal.lfilter([av], [1.0, -(1.0 - av)], dr * dr, zi=[(1.0 - av) * self._var])
            prev_var = np.concatenate([[self._var], vars_[:-1]])
            n_res = self._n_res + np.arange(len(res_idx))
            with np.errstate(divide="ignore", invalid="ignore"):
                var = prev_var / bias_correction(1.0 - av, n_res)
            pm = prev_mean[res_idx]
            sd = np.sqrt(np.where(n_res > 0, var, 0.0))
            floor = 1e-9 * np.maximum(1.0, np.abs(pm))
            z = dr / np.where(sd > floor, sd, floor)
            warm = (count_before[res_idx] >= self.min_per_bucket) & (n_res >= self.warmup)
            s = np.where(warm, z_to_score_array(z, self.watch, self.z_alarm), 0.0)
            scores[res_idx] = s
            zfull = np.zeros(len(v))
            zfull[res_idx] = np.where(warm, z, 0.0)
            zb = np.zeros(n)
            zb[pos] = zfull
            self.last_z_batch = zb
            moved = np.flatnonzero(warm & (dr != 0))
            if len(moved):
                self.direction = Direction.UP if dr[moved[-1]] > 0 else Direction.DOWN
            self._var = float(vars_[-1])
            self._n_res += len(res_idx)
        self._n += len(v)
        out[pos] = scores
        last_warm = bool(has_res[-1]) and bool(count_before[-1] >= self.min_per_bucket) and \
            (self._n_res - 1) >= self.warmup
        self._judge(float(scores[-1]), last_warm)
        if not valid[-1]:
            self._invalid()
        return out
