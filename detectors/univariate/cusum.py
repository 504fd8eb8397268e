"""CUSUM and Page-Hinkley: cumulative sums of standardized deviations for persistent mean shifts."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import Detector, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import batch_points, check_direction
from detectors.univariate._ewm import cusum_path, ewm_path

_UP, _DOWN = Direction.UP, Direction.DOWN
_NORMAL, _ANOMALOUS = DetectorState.NORMAL, DetectorState.ANOMALOUS
_ALARM = Detector.alarm_threshold
_sqrt = math.sqrt


class _CumulativeSum(Detector):
    """Two one-sided sums S+ = max(0, S+ + z - k), S- = max(0, S- - z - k), z standardized by an EWMA baseline.

    The EWMA mean and variance start at 0 and are bias-corrected (divided by ``1 - (1-alpha)^n``). The score is ``1 - 0.01 ** (S / h)``: 0 with no evidence, 0.99 exactly when the sum reaches ``h``.
    """

    state_keys: ClassVar[tuple[str, ...]] = ("_n", "_mean", "_var", "_up", "_down")
    _allowance_attr: ClassVar[str]
    _threshold_attr: ClassVar[str]

    def _init_common(self, alpha: float, direction: str, warmup: int) -> None:
        k, h = getattr(self, self._allowance_attr), getattr(self, self._threshold_attr)
        if not 0.0 < alpha < 1.0:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        if k < 0 or h <= 0:
            raise InvalidInput(f"{self._allowance_attr} must be >= 0 and {self._threshold_attr} > 0")
        if warmup < 2:
            raise InvalidInput(f"warmup must be >= 2, got {warmup}")
        self.alpha = float(alpha)
        self.watch = check_direction(direction)
        self.warmup = int(warmup)
        self._k, self._h = float(k), float(h)      # the allowance and decision level, bound once
        # the point count after which 1 - (1 - alpha)**m == 1.0 exactly for every m >= n - 1
        b, m = 1.0 - self.alpha, 1
        while 1.0 - b ** m != 1.0:
            m *= 2
        lo, hi = m // 2, m                       # bisect for the first m with 1 - b**m == 1.0
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if 1.0 - b ** mid != 1.0 else (lo, mid)
        self._n_sat = hi + 1

    def reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._var = 0.0
        self._up = 0.0
        self._down = 0.0
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    def _score(self, up: float, down: float) -> float:
        s = up if self.watch is Direction.UP else down if self.watch is Direction.DOWN else max(up, down)
        threshold = float(getattr(self, self._threshold_attr))
        return float(1.0 - 0.01 ** (s / threshold))

    def update(self, value: float, timestamp: float | None = None) -> float:
        # The hot path of every streamed point: locals instead of repeated attribute lookups, no helper
        # calls (the NaN check and _judge are inlined), and the same arithmetic (in the same order) as
        # score_batch so that both paths give identical scores.
        try:
            x = float(value)
        except (TypeError, ValueError):
            return self._invalid()
        if x - x != 0.0:            # NaN or +-inf
            return self._invalid()
        a = self.alpha
        b = 1.0 - a
        n = self._n
        raw_mean = self._mean
        if n == 0:
            self._mean = a * x + b * raw_mean
            self._n = 1
            return self._judge(0.0, False)
        raw_var = self._var
        # bias-corrected EWMA mean and variance (both start at 0); once 1 - b**(n-1) rounds to exactly
        # 1.0 the corrections are the identity and the two powers are skipped (same floats)
        if n > self._n_sat:
            mean = raw_mean
            var = raw_var
        else:
            mean = raw_mean / (1.0 - b ** n)
            var = raw_var / (1.0 - b ** (n - 1)) if n > 1 else 0.0
        d = x - mean
        self._mean = a * x + b * raw_mean
        self._var = (a * b) * (d * d) + b * raw_var
        self._n = n + 1
        if n < self.warmup:
            return self._judge(0.0, False)
        sd = _sqrt(var)
        floor = 1e-9 * (mean if mean > 1.0 else -mean if mean < -1.0 else 1.0)
        z = d / (sd if sd > floor else floor)
        k = self._k
        up = self._up + (z - k)
        down = self._down + (-z - k)
        if not up > 0.0:        # max(0.0, up), without the call
            up = 0.0
        if not down > 0.0:
            down = 0.0
        self._up = up
        self._down = down
        watch = self.watch
        if up > 0.0 or down > 0.0:
            self.direction = _UP if up >= down else _DOWN
        s = up if watch is _UP else down if watch is _DOWN else (down if down > up else up)
        score = 1.0 - 0.01 ** (s / self._h) if s != 0.0 else 0.0
        self.score = score
        self.state = _ANOMALOUS if score >= _ALARM else _NORMAL
        return score

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Vectorized equivalent of ``update``: lfilter for the baseline, chunked cumsums for the sums."""
        values, out, valid = batch_points(self, values)
        pos = np.flatnonzero(valid)
        if len(pos) == 0:
            return out
        v = values[pos]
        off = 0
        if self._n == 0:
            out[pos[0]] = self.update(v[0])
            off = 1
        rest = v[off:]
        if len(rest):
            a, b = self.alpha, 1.0 - self.alpha
            raw_means = ewm_path(rest, a, self._mean)
            prev_raw = np.concatenate([[self._mean], raw_means[:-1]])
            counts = (self._n + np.arange(len(rest))).astype(float)      # points seen before each one
            pm = prev_raw / (1.0 - b ** counts)
            d = rest - pm
            raw_vars = _var_path(d, a, self._var)
            prev_rawvar = np.concatenate([[self._var], raw_vars[:-1]])
            with np.errstate(divide="ignore", invalid="ignore"):
                pv = np.where(counts > 1, prev_rawvar / (1.0 - b ** (counts - 1)), 0.0)
            means, vars_ = raw_means, raw_vars
            sd = np.sqrt(pv)
            floor = 1e-9 * np.maximum(1.0, np.abs(pm))
            z = d / np.where(sd > floor, sd, floor)
            warm = (self._n + np.arange(len(rest))) >= self.warmup
            k = getattr(self, self._allowance_attr)
            up = np.zeros(len(rest))
            down = np.zeros(len(rest))
            first = int(np.argmax(warm)) if warm.any() else len(rest)
            if first < len(rest):
                up[first:] = cusum_path(z[first:] - k, self._up)
                down[first:] = cusum_path(-z[first:] - k, self._down)
            h = getattr(self, self._threshold_attr)
            if self.watch is Direction.UP:
                s = up
            elif self.watch is Direction.DOWN:
                s = down
            else:
                s = np.maximum(up, down)
            score = np.where(warm, 1.0 - 0.01 ** (s / h), 0.0)
            moved = np.flatnonzero(warm & ((up > 0) | (down > 0)))
            if len(moved):
                j = moved[-1]
                self.direction = Direction.UP if up[j] >= down[j] else Direction.DOWN
            if first < len(rest):
                self._up, self._down = float(up[-1]), float(down[-1])
            self._mean, self._var = float(means[-1]), float(vars_[-1])
            self._n += len(rest)
            out[pos[off:]] = score
            self._judge(float(score[-1]), bool(warm[-1]))
        if not valid[-1]:
            self._invalid()
        return out


def _var_path(d: np.ndarray, a: float, var0: float) -> np.ndarray:
    """var_t = a(1-a)*d_t^2 + (1-a)*var_{t-1}, the same arithmetic as the streaming update."""
    from scipy import signal

    b = 1.0 - a
    out, _ = signal.lfilter([a * b], [1.0, -b], d * d, zi=[b * var0])
    return np.asarray(out, dtype=float)


@register
class CUSUM(_CumulativeSum):
    """Page's two-sided CUSUM on z-scores against a slow EWMA baseline (allowance ``k``, decision ``h``).

    >>> d = CUSUM(k=0.5, h=5.0)
    >>> for t in range(300):
    ...     _ = d.update(float(t % 2))
    >>> [round(d.update(3.0), 2) for _ in range(3)][-1] >= 0.99
    True
    """

    name = "cusum"
    _allowance_attr = "k"
    _threshold_attr = "h"

    def __init__(self, k: float = 0.5, h: float = 8.0, alpha: float = 0.01, direction: str = "both",
                 warmup: int = 30) -> None:
        self.k = float(k)
        self.h = float(h)
        self._init_common(alpha, direction, warmup)
        super().__init__()


@register
class PageHinkley(_CumulativeSum):
    """Page-Hinkley test: cumulative deviation from a long-memory mean minus ``delta``, alarm at ``threshold``.

    The mean is a very slow EWMA (``alpha``), close to the running mean of the classic test but bounded
    in memory; deviations are standardized so ``delta`` and ``threshold`` are in standard deviations.

    >>> d = PageHinkley()
    >>> for t in range(300):
    ...     _ = d.update(float(t % 2))
    >>> max(d.update(3.0) for _ in range(10)) >= 0.99
    True
    """

    name = "page_hinkley"
    _allowance_attr = "delta"
    _threshold_attr = "threshold"

    def __init__(self, delta: float = 0.5, threshold: float = 10.0, alpha: float = 0.002,
                 direction: str = "both", warmup: int = 30) -> None:
        self.delta = float(delta)
        self.threshold = float(threshold)
        self._init_common(alpha, direction, warmup)
        super().__init__()
