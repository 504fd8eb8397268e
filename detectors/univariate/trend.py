"""Gradual change: a robust slope (Theil-Sen) and its significance (Mann-Kendall) over a sliding window.

Level detectors (robust z, CUSUM) compare each point with a learned baseline; a series that creeps up a
little every minute drags its own baseline along and never looks unusual. A trend detector asks another
question: over the last ``window`` points, do later values keep exceeding earlier ones? The Mann-Kendall
statistic ``S = sum_{i<j} sign(x_j - x_i)`` answers it without assuming a distribution (rank-based, so a
few outliers do not make a trend); the Theil-Sen slope (median of pairwise slopes) says how fast, in
units per second when timestamps are given.

References: Mann (1945), Kendall (1975) for the test and its tie-corrected variance; Theil (1950), Sen
(1968) for the slope (``scipy.stats.theilslopes`` computes the same estimate).

    >>> import numpy as np
    >>> d = TheilSen(window=60)
    >>> for t in range(120):
    ...     _ = d.update(100.0 + 0.5 * t + np.sin(t), float(t))
    >>> d.score >= 0.99, round(d.slope, 1)
    (True, 0.5)
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from detectors.base import Detector, finite_or_none, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import check_direction, z_to_score


def mann_kendall_z(values: np.ndarray) -> float:
    """Mann-Kendall trend statistic as a z score (tie-corrected variance, continuity correction).

    Positive: later values tend to exceed earlier ones. 0.0 for fewer than 3 points or a constant series.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 3:
        return 0.0
    diff = x[None, :] - x[:, None]                  # diff[i, j] = x_j - x_i
    s = float(np.sign(diff[np.triu_indices(n, 1)]).sum())
    _, counts = np.unique(x, return_counts=True)
    ties = counts[counts > 1].astype(float)
    var = (n * (n - 1) * (2 * n + 5) - float(np.sum(ties * (ties - 1) * (2 * ties + 5)))) / 18.0
    if var <= 0.0 or s == 0.0:
        return 0.0
    return (s - math.copysign(1.0, s)) / math.sqrt(var)


def theil_sen_slope(times: np.ndarray, values: np.ndarray) -> float:
    """Median of the pairwise slopes (x_j - x_i) / (t_j - t_i) over pairs with t_j > t_i; NaN if none."""
    t = np.asarray(times, dtype=float)
    x = np.asarray(values, dtype=float)
    if len(t) < 2:
        return math.nan
    i, j = np.triu_indices(len(t), 1)
    dt = t[j] - t[i]
    keep = dt > 0
    if not keep.any():
        return math.nan
    return float(np.median((x[j] - x[i])[keep] / dt[keep]))


@dataclass(frozen=True, slots=True)
class Trend:
    """A window's trend: slope (units per second), Mann-Kendall z, and the slope and z of each segment.

    The window is cut into equal consecutive segments (quarters by default). ``persistence`` is the
    newest segment's slope over the steepest one's: about 1 for steady growth, near 0 for growth that
    levels off (a cache warming up), NaN when nothing grows.
    """

    slope: float
    z: float
    segment_slopes: tuple[float, ...]
    segment_z: tuple[float, ...]
    points: int
    span_seconds: float

    @property
    def persistence(self) -> float:
        steepest = max(self.segment_slopes, default=math.nan)
        if not steepest > 0.0 or not math.isfinite(self.segment_slopes[-1]):
            return math.nan
        return self.segment_slopes[-1] / steepest

    @property
    def evenness(self) -> float:
        """The slowest segment's slope over the steepest one's: near 1 for a steady leak, near 0 when one
        segment holds a jump (memory allocated at once on top of slow drift), NaN when nothing grows."""
        steepest = max(self.segment_slopes, default=math.nan)
        if not steepest > 0.0:
            return math.nan
        return min(self.segment_slopes) / steepest

    def grows_throughout(self, min_z: float = 1.0) -> bool:
        """Every segment grows (positive slope, Mann-Kendall z at least ``min_z``)."""
        return bool(self.segment_slopes) and all(
            sl > 0.0 and z >= min_z for sl, z in zip(self.segment_slopes, self.segment_z))


def trend(times: np.ndarray, values: np.ndarray, segments: int = 4) -> Trend:
    """The trend of one window of points (see :class:`Trend`); segments need three points each."""
    t = np.asarray(times, dtype=float)
    x = np.asarray(values, dtype=float)
    n = len(t)
    k = segments if n >= 3 * segments else 0
    cuts = [round(i * n / k) for i in range(k + 1)] if k else []
    parts = [(t[a:b], x[a:b]) for a, b in zip(cuts, cuts[1:])]
    return Trend(slope=theil_sen_slope(t, x), z=mann_kendall_z(x),
                 segment_slopes=tuple(theil_sen_slope(pt, px) for pt, px in parts),
                 segment_z=tuple(mann_kendall_z(px) for _, px in parts),
                 points=n, span_seconds=float(t[-1] - t[0]) if n else 0.0)


@register
class TheilSen(Detector):
    """Trend detector: Mann-Kendall significance of the last ``window`` points, Theil-Sen slope as ``slope``.

    The score is the Mann-Kendall z mapped to [0, 1] (0.99 exactly at ``z_alarm``), so a rule can use it as
    the confidence that the series trends in the watched ``direction``. Timestamps give the slope its unit
    (per second); without them points are one unit apart.

    >>> d = TheilSen(window=30, min_periods=10)
    >>> [d.update(float(t)) for t in range(12)][-1] >= 0.99
    True
    """

    name = "theil_sen"
    state_keys: ClassVar[tuple[str, ...]] = ("_times", "_values", "_n")

    def __init__(self, window: int = 60, z_alarm: float = 4.0, direction: str = "up", min_periods: int = 20) -> None:
        if window < 4:
            raise InvalidInput(f"window must be >= 4, got {window}")
        if not 3 <= min_periods <= window:
            raise InvalidInput(f"min_periods must be in [3, window], got {min_periods}")
        if z_alarm <= 0:
            raise InvalidInput(f"z_alarm must be > 0, got {z_alarm}")
        self.window = int(window)
        self.z_alarm = float(z_alarm)
        self.watch = check_direction(direction)
        self.min_periods = int(min_periods)
        super().__init__()

    def reset(self) -> None:
        self._times: deque[float] = deque(maxlen=self.window)
        self._values: deque[float] = deque(maxlen=self.window)
        self._n = 0
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    @property
    def slope(self) -> float:
        """Theil-Sen slope of the current window (per second with timestamps); NaN before two points."""
        return theil_sen_slope(np.fromiter(self._times, float), np.fromiter(self._values, float))

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The points in the window: (timestamps, values), oldest first."""
        return np.fromiter(self._times, float, len(self._times)), np.fromiter(self._values, float, len(self._values))

    def trend(self) -> Trend:
        """Slope, significance and half-window slopes of the current window."""
        return trend(*self.points())

    def update(self, value: float, timestamp: float | None = None) -> float:
        x = finite_or_none(value)
        if x is None:
            return self._invalid()
        t = float(self._n) if timestamp is None else finite_or_none(timestamp)
        if t is None or (self._times and t < self._times[-1]):
            return self._invalid()   # out-of-order or non-finite time: reported, learned state untouched
        self._times.append(t)
        self._values.append(x)
        self._n += 1
        if len(self._values) < self.min_periods:
            return self._judge(0.0, False)
        z = mann_kendall_z(np.fromiter(self._values, float))
        if z > 0.0:
            self.direction = Direction.UP
        elif z < 0.0:
            self.direction = Direction.DOWN
        return self._judge(z_to_score(z, self.watch, self.z_alarm), True)
