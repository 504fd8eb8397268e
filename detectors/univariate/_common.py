"""Shared helpers for the univariate detectors: score calibration and input validation."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from detectors.types import Direction

if TYPE_CHECKING:
    from detectors.base import Detector

# Two-sided standard-normal quantile of 0.99: a calibrated score reaches 0.99 exactly at the alarm z.
Z99 = 2.5758293035489004
_SQRT2 = math.sqrt(2.0)
# enum members bound once: Direction.UP is a class-attribute lookup costing ~0.15 us per streamed point
_UP, _DOWN = Direction.UP, Direction.DOWN


def check_direction(direction: str | Direction) -> Direction:
    try:
        return Direction(direction)
    except ValueError:
        from detectors.errors import InvalidInput

        raise InvalidInput(f"direction must be one of up, down, both; got {direction!r}") from None


def z_to_score(z: float, direction: Direction, z_alarm: float) -> float:
    """Map a z statistic to [0, 1] so that score >= 0.99 exactly when the directed |z| >= z_alarm.

    score = erf(c * z' / sqrt(2)) with c = Z99 / z_alarm, i.e. the two-sided normal coverage of the
    rescaled statistic; z' is |z|, max(z, 0) or max(-z, 0) for both/up/down.
    """
    if direction is _UP:
        zz = max(0.0, z)
    elif direction is _DOWN:
        zz = -z if z < 0.0 else 0.0
    else:
        zz = abs(z)
    return math.erf(zz * (Z99 / z_alarm) / _SQRT2)


def z_to_score_array(z: np.ndarray, direction: Direction, z_alarm: float) -> np.ndarray:
    if direction is Direction.UP:
        zz = np.maximum(z, 0.0)
    elif direction is Direction.DOWN:
        zz = np.maximum(-z, 0.0)
    else:
        zz = np.abs(z)
    return np.asarray(special.erf(zz * (Z99 / z_alarm) / _SQRT2), dtype=float)


def as_float_array(values: object) -> np.ndarray:
    """Values as a 1-d float array; non-numeric input raises InvalidInput naming the problem."""
    from detectors.errors import InvalidInput

    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"values must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise InvalidInput(f"values must be one-dimensional, got shape {arr.shape}")
    return arr


def batch_points(det: Detector, values: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The start of every ``score_batch``: values as floats, zero scores, the mask of finite points.

    When there are points but none is finite, the detector is marked invalid, as ``update`` would.
    """
    arr = as_float_array(values)
    valid = np.isfinite(arr)
    if len(arr) and not valid.any():
        det._invalid()
    return arr, np.zeros(len(arr)), valid
