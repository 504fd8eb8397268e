"""Shared machinery of the novelty learners (``context``, ``fuzzy_art``, ``art_context``).

Three pieces, each usable point by point (``update``) and over an array (``score_batch``) with the
same floating-point operations, so both paths give identical scores:

* ``ValueRange``: where a value sits in the series' range. NAB hands every detector the file's minimum
  and maximum (``value_min``/``value_max``); a live stream has no such range, so it is learned online:
  the running minimum and maximum over the first ``warmup`` points, then widened by ``margin`` times the
  span whenever a value leaves it (a widening re-quantises later points, so it is rare by design).
* a rest period (CAD OSE's ``restPeriod``, ARTime's masking): after a raw score reaches ``mask_level``,
  the next ``rest`` points report 0.
* a calibration ``raw -> score`` that is monotone and puts ``mask_level`` exactly at the service's alarm
  level 0.99, so ``Detector.alarm_threshold`` means "the learner saw something new enough to rest".
"""
from __future__ import annotations

import math
import sys
from abc import abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import Detector, finite_or_none
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import batch_points

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_NONE = -(2 ** 62)          # "no alarm yet" as a position far in the past
_FMAX = sys.float_info.max
_UP, _DOWN = Direction.UP, Direction.DOWN


def calibrate(raw: FloatArray, mask_level: float) -> FloatArray:
    """Monotone map of raw novelty in [0, 1] to a score in [0, 1] with ``mask_level -> 0.99``."""
    low = 0.99 * raw / mask_level
    high = 0.99 + 0.01 * (raw - mask_level) / (1.0 - mask_level)
    return np.where(raw < mask_level, low, high)


def calibrate_one(raw: float, mask_level: float) -> float:
    if raw < mask_level:
        return 0.99 * raw / mask_level
    return 0.99 + 0.01 * (raw - mask_level) / (1.0 - mask_level)


class NoveltyDetector(Detector):
    """Base of the novelty learners: range handling, rest period, calibration, NaN handling.

    Subclasses implement ``_raw_one(x, lo, hi)`` (the raw novelty of one point, learning from it) and
    ``_raw_many(x, lo, hi)`` (the same over arrays, learning from all of them), plus ``_reset_model``.
    """

    _base_keys: ClassVar[tuple[str, ...]] = ("_n", "_lo", "_hi", "_min", "_max", "_age", "_prev")

    def __init__(self, value_min: float | None = None, value_max: float | None = None,
                 probation: int | None = None, warmup: int = 150, margin: float = 0.25,
                 mask_level: float = 0.75, rest_fraction: float = 0.2) -> None:
        if (value_min is None) != (value_max is None):
            raise InvalidInput("give both value_min and value_max (the series' known range), or neither")
        if value_min is not None and value_max is not None:
            if not (math.isfinite(value_min) and math.isfinite(value_max)) or value_max < value_min:
                raise InvalidInput(f"value range must be finite with min <= max, got [{value_min}, {value_max}]")
        if probation is not None and probation < 0:
            raise InvalidInput(f"probation must be >= 0 points, got {probation}")
        if warmup < 2:
            raise InvalidInput(f"warmup must be >= 2 points, got {warmup}")
        if margin < 0:
            raise InvalidInput(f"margin must be >= 0, got {margin}")
        if not 0.0 < mask_level < 1.0:
            raise InvalidInput(f"mask_level must be in (0, 1), got {mask_level}")
        if not 0.0 <= rest_fraction <= 1.0:
            raise InvalidInput(f"rest_fraction must be in [0, 1], got {rest_fraction}")
        self.value_min = None if value_min is None else float(value_min)
        self.value_max = None if value_max is None else float(value_max)
        self.probation = None if probation is None else int(probation)
        self.warmup = int(warmup)
        self.margin = float(margin)
        self.mask_level = float(mask_level)
        self.rest_fraction = float(rest_fraction)
        # NAB: the rest period is a fifth of the probationary period (CAD OSE's choice in NAB); without a
        # probationary period, a fifth of the warm-up.
        base = self.probation if self.probation is not None else self.warmup
        self._rest = int(base * self.rest_fraction)
        self._warm_at = self.probation if self.probation is not None else self.warmup
        super().__init__()

    # -- subclass hooks ---------------------------------------------------------------------------
    @abstractmethod
    def _reset_model(self) -> None: ...

    @abstractmethod
    def _raw_one(self, x: float, lo: float, hi: float) -> float: ...

    @abstractmethod
    def _raw_many(self, x: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray: ...

    # -- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._n = 0
        self._lo = self._hi = 0.0          # the bounds in use (fixed range, or learned)
        self._widened = False              # transient: the last point widened a learned range
        self._min = self._max = 0.0        # running extremes (learned range only)
        self._age = -1                     # points since the last raw score >= mask_level; -1 = none
        self._prev = math.nan              # last valid value (for the direction)
        self._reset_model()
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    # -- range ------------------------------------------------------------------------------------
    def _bounds_one(self, x: float) -> tuple[float, float]:
        if self.value_min is not None and self.value_max is not None:
            return self.value_min, self.value_max
        n = self._n
        if n == 0:
            self._min = self._max = x
        elif n < self.warmup or x < self._lo or x > self._hi:
            self._min = min(self._min, x)
            self._max = max(self._max, x)
            self._widened = n >= self.warmup
        else:
            return self._lo, self._hi
        if n + 1 >= self.warmup:
            span = self._max - self._min            # inf for extremes near the float limits: clamped
            self._lo = max(self._min - self.margin * span, -_FMAX)
            self._hi = min(self._max + self.margin * span, _FMAX)
        else:
            self._lo, self._hi = self._min, self._max
        return self._lo, self._hi

    def _bounds_many(self, v: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
        """Bounds in use at each point, and where a learned range had to widen (after warm-up)."""
        n = len(v)
        widened = np.zeros(n, dtype=bool)
        if self.value_min is not None and self.value_max is not None:
            return np.full(n, self.value_min), np.full(n, self.value_max), widened
        lo = np.empty(n)
        hi = np.empty(n)
        i = 0
        # warm-up points: running extremes (a short sequential stretch, at most `warmup` points)
        while i < n and self._n + i < self.warmup:
            lo[i], hi[i] = self._bounds_step(float(v[i]), self._n + i)
            i += 1
        # afterwards the bounds change only when a value leaves them: find each such value by search
        while i < n:
            cur_lo, cur_hi = self._lo, self._hi
            rest = v[i:]
            out = np.flatnonzero((rest < cur_lo) | (rest > cur_hi))
            j = n if len(out) == 0 else i + int(out[0])
            lo[i:j] = cur_lo
            hi[i:j] = cur_hi
            if j == n:
                break
            lo[j], hi[j] = self._bounds_step(float(v[j]), self._n + j)
            widened[j] = True
            i = j + 1
        return lo, hi, widened

    def _bounds_step(self, x: float, n: int) -> tuple[float, float]:
        saved = self._n
        self._n = n
        try:
            return self._bounds_one(x)
        finally:
            self._n = saved

    # -- scoring ----------------------------------------------------------------------------------
    def update(self, value: float, timestamp: float | None = None) -> float:
        x = finite_or_none(value)
        if x is None:
            return self._invalid()
        self._widened = False
        lo, hi = self._bounds_one(x)
        raw = self._raw_one(x, lo, hi)
        if self._widened:
            raw = 1.0        # a value beyond the learned range is new by definition (HTM's spatial rule)
        masked = 0 <= self._age < self._rest
        if raw >= self.mask_level:
            self._age = 0
        elif self._age >= 0:
            self._age += 1
        warm = self._n >= self._warm_at
        self._n += 1
        if x != self._prev and self._prev == self._prev:
            self.direction = _UP if x > self._prev else _DOWN
        self._prev = x
        score = 0.0 if (masked or not warm) else calibrate_one(raw, self.mask_level)
        self._judge(score, warm)
        if masked and raw >= self.mask_level and warm:
            self.state = DetectorState.ANOMALOUS
        return score

    def score_batch(self, values: npt.ArrayLike, timestamps: npt.ArrayLike | None = None) -> FloatArray:
        """Vectorized equivalent of ``update`` on every value (same floating-point operations)."""
        arr, out, valid = batch_points(self, values)
        pos = np.flatnonzero(valid)
        if len(pos) == 0:
            return out
        v = arr[pos]
        m = len(v)
        lo, hi, widened = self._bounds_many(v)
        raw = np.where(widened, 1.0, self._raw_many(v, lo, hi))
        # rest period: a point is masked when the last raw >= mask_level before it is < rest points back
        idx = np.arange(m, dtype=np.int64)
        hit = np.where(raw >= self.mask_level, idx, _NONE)
        start = _NONE if self._age < 0 else -1 - self._age
        last = np.maximum.accumulate(np.concatenate([[start], hit]))[:-1]   # last hit strictly before i
        masked = (last > _NONE) & (idx - last - 1 < self._rest)
        warm = self._n + idx >= self._warm_at
        s = np.where(masked | ~warm, 0.0, calibrate(raw, self.mask_level))
        out[pos] = s
        last_hit = int(np.maximum(start, hit.max()))
        self._age = -1 if last_hit == _NONE else m - 1 - last_hit
        # direction: the last change of value
        prev = np.concatenate([[self._prev], v[:-1]])
        ch = np.flatnonzero((v != prev) & (prev == prev))
        if len(ch):
            k = int(ch[-1])
            self.direction = _UP if v[k] > prev[k] else _DOWN
        self._prev = float(v[-1])
        self._n += m
        self._judge(float(s[-1]), bool(warm[-1]))
        if bool(masked[-1]) and raw[-1] >= self.mask_level and bool(warm[-1]):
            self.state = DetectorState.ANOMALOUS
        if not valid[-1]:
            self._invalid()
        return out


def position(x: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Where each value lies in [lo, hi], as a fraction (unclipped; a span of 0 counts as 1).

    Computed on halves, so ranges near the float limits do not overflow; halving is exact, so for every
    other range this equals ``(x - lo) / (hi - lo)`` bit for bit.
    """
    span = np.where(hi > lo, hi * 0.5 - lo * 0.5, 0.5)
    return (x * 0.5 - lo * 0.5) / span


def position_one(x: float, lo: float, hi: float) -> float:
    span = hi * 0.5 - lo * 0.5 if hi > lo else 0.5
    return (x * 0.5 - lo * 0.5) / span


def quantise(x: FloatArray, lo: FloatArray, hi: FloatArray, bins: int) -> IntArray:
    """Level of each value in ``bins`` equal slices of [lo, hi] (values outside go to the end slices)."""
    q = np.floor(position(x, lo, hi) * bins)
    return np.clip(q, 0, bins - 1).astype(np.int64)


def quantise_one(x: float, lo: float, hi: float, bins: int) -> int:
    q = math.floor(position_one(x, lo, hi) * bins)
    return 0 if q < 0 else (bins - 1 if q > bins - 1 else int(q))
