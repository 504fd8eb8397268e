"""Robust z-score: distance from the sliding-window median in units of the (scaled) MAD."""
from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from detectors.base import Detector, finite_or_none, register
from detectors.errors import InvalidInput
from detectors.types import Direction
from detectors.univariate._common import (
    batch_points,
    check_direction,
    z_to_score,
    z_to_score_array,
)

_MAD_SCALE = 1.4826        # MAD -> sigma for normal data
_MEANAD_SCALE = 1.2533     # mean absolute deviation -> sigma, used when more than half the window is tied
_CHUNK = 1 << 15
_UP, _DOWN = Direction.UP, Direction.DOWN


def _scale_floor(center: float) -> float:
    return 1e-9 * max(1.0, abs(center))


@register
class RobustZ(Detector):
    """Median/MAD z-score over the previous ``window`` points, calibrated to [0, 1].

    The point is scored against the window *before* it joins it, so scores are causal. The score is
    ``erf(|z| * 2.5758 / z_alarm / sqrt(2))``: it reaches ``alarm_threshold`` (0.99) exactly when
    ``|z| >= z_alarm``. With ``direction="up"`` (or ``"down"``) only deviations on that side score.

    >>> d = RobustZ(window=32, z_alarm=3.5)
    >>> for t in range(100):
    ...     _ = d.update(10.0 + (t % 3), t)
    >>> d.update(50.0) >= d.alarm_threshold, d.direction.value
    (True, 'up')
    """

    name = "robust_z"
    state_keys = ("_buf", "_sorted")

    def __init__(self, window: int = 64, z_alarm: float = 4.0, direction: str = "both",
                 min_periods: int = 16) -> None:
        if window < 3:
            raise InvalidInput(f"window must be >= 3, got {window}")
        if not 1 <= min_periods <= window:
            raise InvalidInput(f"min_periods must be in [1, window], got {min_periods}")
        if not z_alarm > 0:
            raise InvalidInput(f"z_alarm must be > 0, got {z_alarm}")
        self.window = int(window)
        self.z_alarm = float(z_alarm)
        self.watch = check_direction(direction)
        self.min_periods = int(min_periods)
        super().__init__()

    def reset(self) -> None:
        self._buf: list[float] = []       # the last `window` valid values, oldest first
        self._sorted: list[float] = []    # the same values, sorted
        self.score = 0.0
        self.state = self.state.WARMUP
        self.direction = Direction.BOTH

    # -- streaming -------------------------------------------------------------------------------
    def update(self, value: float, timestamp: float | None = None) -> float:
        x = finite_or_none(value)
        if x is None:
            return self._invalid()
        s = self._sorted
        n = len(s)
        warm = n >= self.min_periods
        score = 0.0
        if warm:
            k = n // 2
            med = s[k] if n % 2 else 0.5 * (s[k - 1] + s[k])
            scale = _sorted_window_scale(s, med)
            score = z_to_score((x - med) / scale, self.watch, self.z_alarm)
            if x > med:
                self.direction = _UP
            elif x < med:
                self.direction = _DOWN
        buf = self._buf
        buf.append(x)
        insort(s, x)
        if len(buf) > self.window:
            del s[bisect_left(s, buf.pop(0))]
        return self._judge(score, warm)

    # -- batch -----------------------------------------------------------------------------------
    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Vectorized equivalent of calling ``update`` on every value (continues from the current state)."""
        values, out, valid = batch_points(self, values)
        v = values[valid]
        if len(v) == 0:
            return out
        w = self.window
        hist = np.asarray(self._buf, dtype=float)
        full = np.concatenate([hist, v])
        h = len(hist)
        scores = np.zeros(len(v))
        centers = np.zeros(len(v))
        # Positions whose window is still partial (fewer than `window` predecessors): loop on the sorted state.
        n_partial = min(len(v), max(0, w - h))
        tmp = RobustZ(**self.params())
        tmp._buf, tmp._sorted = list(self._buf), list(self._sorted)
        for i in range(n_partial):
            s = tmp._sorted
            if len(s) >= self.min_periods:
                k = len(s) // 2
                centers[i] = s[k] if len(s) % 2 else 0.5 * (s[k - 1] + s[k])
            else:
                centers[i] = np.nan
            scores[i] = tmp.update(v[i])
        # Full windows: full[j - w: j] precedes full[j]; row r of the view is full[r: r + w].
        start = h + n_partial
        if start < len(full):
            windows = sliding_window_view(full[:-1], w)
            k = w // 2
            kth = [k] if w % 2 else [k - 1, k]
            for c0 in range(start, len(full), _CHUNK):
                c1 = min(len(full), c0 + _CHUNK)
                win = windows[c0 - w: c1 - w]
                part = np.partition(win, kth, axis=1)
                med = part[:, k] if w % 2 else 0.5 * (part[:, k - 1] + part[:, k])
                dev = np.abs(win - med[:, None])
                scale = _robust_scale(dev, med)
                z = (full[c0:c1] - med) / scale
                scores[c0 - h: c1 - h] = z_to_score_array(z, self.watch, self.z_alarm)
                centers[c0 - h: c1 - h] = med
        out[valid] = scores
        # Carry the streaming state forward.
        self._buf = full[-w:].tolist()
        self._sorted = sorted(self._buf)
        diff = v - centers
        moved = np.flatnonzero(np.isfinite(diff) & (diff != 0))
        if len(moved):
            self.direction = Direction.UP if diff[moved[-1]] > 0 else Direction.DOWN
        warm_last = len(full) - 1 >= self.min_periods
        self._judge(float(scores[-1]), warm_last)
        if not valid[-1]:
            self._invalid()
        return out


def _sorted_window_scale(s: list[float], med: float) -> float:
    """``_robust_scale`` of one sorted window around its median ``med``, in O(log n) instead of O(n).

    The absolute deviations below the median, ``med - s[q-1], med - s[q-2], ...``, and those from it up,
    ``s[q] - med, s[q+1] - med, ...``, are two ascending runs; the k + 1 smallest deviations are the first
    i of one run and the first k + 1 - i of the other, and i is found by binary search. The values are
    the floats the batch path partitions, so both paths agree exactly.
    """
    n = len(s)
    k = n >> 1
    q = bisect_left(s, med)       # s[:q] < med <= s[q:]
    lo = k + 1 - n + q            # at most n - q deviations from above
    if lo < 0:
        lo = 0
    hi = q if q < k + 1 else k + 1
    a, b = q - 1, q + k
    while lo < hi:
        i = (lo + hi) >> 1
        if med - s[a - i] < s[b - i] - med:     # the (i+1)-th deviation from below is among the k + 1
            lo = i + 1
        else:
            hi = i
    i = lo
    below = med - s[q - i] if i else -1.0               # the largest deviation taken from each run
    above = s[b - i] - med if i <= k else -1.0
    if n & 1:
        mad = below if below > above else above
    elif below >= above:
        # the k-th smallest deviation is the largest of the k + 1 taken; the (k-1)-th is the largest left
        nxt = med - s[q - i + 1] if i > 1 else -1.0
        mad = 0.5 * ((nxt if nxt > above else above) + below)
    else:
        nxt = s[b - i - 1] - med if i < k else -1.0
        mad = 0.5 * ((nxt if nxt > below else below) + above)
    scale = _MAD_SCALE * mad
    if scale > 0:
        return scale
    return float(_robust_scale(np.abs(np.asarray(s) - med)[None, :], np.array([med]))[0])


def _robust_scale(dev: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Per-row sigma estimate from absolute deviations: 1.4826·MAD, else 1.2533·mean AD, else a tiny floor."""
    n = dev.shape[1]
    k = n // 2
    kth = [k] if n % 2 else [k - 1, k]
    part = np.partition(dev, kth, axis=1)
    mad = part[:, k] if n % 2 else 0.5 * (part[:, k - 1] + part[:, k])
    scale = _MAD_SCALE * mad
    zero = scale <= 0
    if zero.any():
        meanad = _MEANAD_SCALE * dev[zero].mean(axis=1)
        floor = 1e-9 * np.maximum(1.0, np.abs(center[zero]))
        scale[zero] = np.maximum(meanad, floor)
    return scale
