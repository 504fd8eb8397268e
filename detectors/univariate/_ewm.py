"""EWMA recursions shared by streaming and batch paths, written so both give the same numbers.

Streaming uses ``y = a*x + (1-a)*y_prev``; batch runs the same first-order filter through
``scipy.signal.lfilter`` (direct form II transposed), which performs the same two products and one sum.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import signal


def ewm_path(x: np.ndarray, a: float, y0: float) -> np.ndarray:
    """y_t = a*x_t + (1-a)*y_{t-1}, starting from y_{-1} = y0."""
    b = 1.0 - a
    y, _ = signal.lfilter([a], [1.0, -b], x, zi=[b * y0])
    return np.asarray(y, dtype=float)


def ewm_mean_var(x: np.ndarray, a: float, mean0: float, var0: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means and variances *before* each point (what it is scored against), and after the last one.

    mean_t = a*x_t + (1-a)*mean_{t-1};  var_t = a(1-a)*d_t^2 + (1-a)*var_{t-1}, d_t = x_t - mean_{t-1}.
    Returns (prev_mean, prev_var, mean_after, var_after) arrays/scalars.
    """
    b = 1.0 - a
    means, _ = signal.lfilter([a], [1.0, -b], x, zi=[b * mean0])
    prev_mean = np.concatenate([[mean0], means[:-1]])
    d = x - prev_mean
    vars_, _ = signal.lfilter([a * b], [1.0, -b], d * d, zi=[b * var0])
    prev_var = np.concatenate([[var0], vars_[:-1]])
    return prev_mean, prev_var, means, vars_


def cusum_path(y: np.ndarray, s0: float, chunk: int = 1024) -> np.ndarray:
    """S_t = max(0, S_{t-1} + y_t) from S_{-1} = s0, vectorized per chunk (bounded rounding)."""
    out = np.empty(len(y))
    s = s0
    for c0 in range(0, len(y), chunk):
        c = np.cumsum(y[c0: c0 + chunk])
        m = np.minimum(np.minimum.accumulate(c), -s)
        seg = c - m
        seg[seg < 0] = 0.0
        out[c0: c0 + chunk] = seg
        s = float(seg[-1])
    return out


def scale_floor(center: np.ndarray | float) -> np.ndarray | float:
    """Smallest standard deviation used, so constant series give finite z-scores."""
    return 1e-9 * np.maximum(1.0, np.abs(center))


def bias_correction(b: float, counts: np.ndarray) -> np.ndarray:
    """``1 - b**counts`` elementwise, as the streaming path computes it; exactly 1.0 once b**n < 2**-54.

    Only the leading counts need the power (the rest round to 1.0), which keeps long batches cheap.
    """
    out = np.ones(len(counts))
    if len(counts) == 0 or b <= 0.0:
        return out
    limit = math.ceil(-54.0 * math.log(2.0) / math.log(b)) + 1
    head = counts < limit
    if head.any():
        out[head] = 1.0 - b ** counts[head].astype(float)
    return out
