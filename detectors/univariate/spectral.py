"""Spectral residual (Ren et al., KDD 2019): saliency of the newest point in the log-amplitude spectrum."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from detectors.base import Detector, finite_or_none, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import batch_points

_CHUNK = 1 << 14


def _saliency_ratio(win: np.ndarray, extend: int, q: int, local: int) -> np.ndarray:
    """Rows of ``win`` are windows ending at the scored point; returns (S_last - mean S_local) / mean S_local."""
    w = win.shape[1]
    # pad with `extend` copies of the window median, so the newest point is not at the edge of the
    # transform (the paper extrapolates the trend; that copies a spike into the padding and hides it)
    nxt = np.median(win, axis=1)
    ext = np.concatenate([win, np.repeat(nxt[:, None], extend, axis=1)], axis=1)
    n = ext.shape[1]
    spec = np.fft.rfft(ext, axis=1)
    amp = np.abs(spec)
    log_amp = np.log(amp + 1e-8)
    # moving average of the log spectrum over q bins, edges padded with the edge value
    left, right = q // 2, q - 1 - q // 2
    pad = np.concatenate([np.repeat(log_amp[:, :1], left, axis=1), log_amp,
                          np.repeat(log_amp[:, -1:], right, axis=1)], axis=1)
    width = log_amp.shape[1]
    acc = pad[:, 0:width].copy()
    for j in range(1, q):
        acc += pad[:, j: j + width]
    avg = acc / q
    resid = log_amp - avg
    phase = np.where(amp > 0, spec / np.where(amp > 0, amp, 1.0), 0.0)
    sal = np.abs(np.fft.irfft(np.exp(resid) * phase, n=n, axis=1))
    s_last = sal[:, w - 1]
    loc = sal[:, w - 1 - local: w - 1].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(loc > 0, (s_last - loc) / loc, 0.0)
    return np.where(np.isfinite(r), r, 0.0)


@register
class SpectralResidual(Detector):
    """Spectral residual saliency of each point within the ``window`` points ending at it.

    The window is padded with ``extend`` copies of its median; the log-amplitude spectrum minus its
    ``q``-point moving average is transformed back, and the newest point's saliency is compared with the
    mean saliency of the ``local`` points before it: ``r = (S - mean) / mean``. Score
    ``1 - 0.01 ** (r / r_alarm)`` (0 for r <= 0): 0.99 exactly at ``r = r_alarm``. State: the last
    ``window`` values.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.sin(np.arange(300) / 5.0) + 0.1 * rng.normal(size=300)
    >>> x[250] += 4.0
    >>> s = SpectralResidual().score_batch(x)
    >>> int(np.argmax(s)), bool(s[250] >= 0.99)
    (250, True)
    """

    name = "spectral_residual"
    state_keys = ("_buf",)

    def __init__(self, window: int = 64, extend: int = 5, q: int = 3, local: int = 21, r_alarm: float = 6.0
                 ) -> None:
        if window < 8 or not 1 <= local < window or extend < 1 or q < 1:
            raise InvalidInput("need window >= 8, 1 <= local < window, extend >= 1, q >= 1")
        if r_alarm <= 0:
            raise InvalidInput(f"r_alarm must be > 0, got {r_alarm}")
        self.window = int(window)
        self.extend = int(extend)
        self.q = int(q)
        self.local = int(local)
        self.r_alarm = float(r_alarm)
        super().__init__()

    def reset(self) -> None:
        self._buf: list[float] = []
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    def _to_score(self, r: np.ndarray) -> np.ndarray:
        return np.where(r > 0, 1.0 - 0.01 ** (np.maximum(r, 0.0) / self.r_alarm), 0.0)

    def update(self, value: float, timestamp: float | None = None) -> float:
        x = finite_or_none(value)
        if x is None:
            return self._invalid()
        self._buf.append(x)
        if len(self._buf) > self.window:
            del self._buf[0]
        if len(self._buf) < self.window:
            return self._judge(0.0, False)
        win = np.asarray(self._buf)[None, :]
        score = float(self._to_score(_saliency_ratio(win, self.extend, self.q, self.local))[0])
        prev = self._buf[-2]
        if x != prev:
            self.direction = Direction.UP if x > float(np.mean(self._buf[:-1])) else Direction.DOWN
        return self._judge(score, True)

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Vectorized equivalent of ``update``: FFTs of all sliding windows at once, in chunks."""
        values, out, valid = batch_points(self, values)
        pos = np.flatnonzero(valid)
        if len(pos) == 0:
            return out
        v = values[pos]
        h = len(self._buf)
        full = np.concatenate([np.asarray(self._buf, dtype=float), v])
        w = self.window
        scores = np.zeros(len(v))
        # point j of `full` (j >= h) is scored once full[j-w+1 .. j] exists, i.e. j >= w-1
        start = max(h, w - 1)
        if start < len(full):
            wins = sliding_window_view(full, w)          # row r = full[r : r+w], ends at r+w-1
            for c0 in range(start, len(full), _CHUNK):
                c1 = min(len(full), c0 + _CHUNK)
                r = _saliency_ratio(wins[c0 - w + 1: c1 - w + 1], self.extend, self.q, self.local)
                scores[c0 - h: c1 - h] = self._to_score(r)
        out[pos] = scores
        self._buf = full[-w:].tolist()
        # direction of the last point that moved, against the mean of the window before it
        for j in range(len(full) - 1, max(h, w - 1) - 1, -1):
            if full[j] != full[j - 1]:
                mean_before = float(np.mean(full[j - w + 1: j]))
                self.direction = Direction.UP if full[j] > mean_before else Direction.DOWN
                break
        self._judge(float(scores[-1]), len(full) >= w)
        if not valid[-1]:
            self._invalid()
        return out
