"""``fuzzy_art``: an online category learner (fuzzy ART) over short windows of normalised values."""
from __future__ import annotations

import numpy as np

from detectors.base import register
from detectors.errors import InvalidInput
from detectors.univariate._novelty import FloatArray, NoveltyDetector


@register
class FuzzyART(NoveltyDetector):
    """How far the latest window of values is from every shape learned so far (fuzzy ART; after ARTime).

    The input is the last ``window`` values, each normalised to [0, 1] by the series' range (NAB's
    ``value_min``/``value_max``, or learned online), complement coded ``I = (a, 1 - a)``. Categories
    are fuzzy ART weight vectors ``w_j`` (Carpenter, Grossberg & Rosen 1991): the match of ``I`` with
    ``w_j`` is ``|I ^ w_j| / |I|`` (``^`` = elementwise min, ``|.|`` = sum), the choice among the
    categories that pass the vigilance ``rho`` is by ``|I ^ w_j| / (alpha + |w_j|)``, and the chosen one
    learns ``w_j <- beta (I ^ w_j) + (1 - beta) w_j``. No category passing means a new shape: a new
    category is stored (up to ``max_categories``). Raw novelty is the mismatch of the best category,
    ``1 - max_j match_j``, measured before learning, scaled by the second, lower vigilance
    ``1 - 2 (1 - rho)`` (dual vigilance: a mismatch between the two vigilances makes a new category but
    is only half novel). After a raw novelty of ``mask_level``, the next points are masked (the rest
    period, a fifth of NAB's probationary period). Scores are calibrated so ``mask_level`` is 0.99.

    >>> d = FuzzyART()
    >>> for t in range(600):
    ...     _ = d.update(float(t % 10), t)
    >>> d.update(55.0) >= d.alarm_threshold
    True
    """

    name = "fuzzy_art"
    state_keys = (*NoveltyDetector._base_keys, "_win", "_W", "_norms")

    def __init__(self, window: int = 4, vigilance: float = 0.95, beta: float = 1.0, alpha: float = 1e-3,
                 max_categories: int = 2000, value_min: float | None = None,
                 value_max: float | None = None, probation: int | None = None, warmup: int = 150,
                 margin: float = 0.25, mask_level: float = 0.75, rest_fraction: float = 0.2) -> None:
        if not 1 <= window <= 64:
            raise InvalidInput(f"window must be in [1, 64], got {window}")
        if not 0.5 <= vigilance < 1.0:
            raise InvalidInput(f"vigilance must be in [0.5, 1), got {vigilance}")
        if not 0.0 < beta <= 1.0 or alpha <= 0:
            raise InvalidInput(f"need 0 < beta <= 1 and alpha > 0, got {beta}, {alpha}")
        if max_categories < 1:
            raise InvalidInput(f"max_categories must be >= 1, got {max_categories}")
        self.window = int(window)
        self.vigilance = float(vigilance)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.max_categories = int(max_categories)
        self._scale = 2.0 * (1.0 - self.vigilance)
        super().__init__(value_min, value_max, probation, warmup, margin, mask_level, rest_fraction)

    def _reset_model(self) -> None:
        self._win: list[float] = []                       # the last `window` values, oldest first
        self._W = np.zeros(0)                             # categories, flat (n_categories * 2 * window)
        self._norms = np.zeros(0)                         # |w_j| of each category

    def _raw_one(self, x: float, lo: float, hi: float) -> float:
        win = self._win
        win.append(x)
        if len(win) > self.window:
            del win[0]
        if len(win) < self.window:
            return 0.0
        span = hi * 0.5 - lo * 0.5 if hi > lo else 0.5      # halves: see _novelty.position
        a = np.clip((np.asarray(win) * 0.5 - lo * 0.5) / span, 0.0, 1.0)
        inp = np.concatenate([a, 1.0 - a])
        dim = 2 * self.window
        n_cat = len(self._norms)
        if n_cat == 0:
            self._W = inp.copy()
            self._norms = np.array([inp.sum()])
            return 0.0
        weights = self._W.reshape(n_cat, dim)
        inter = np.minimum(weights, inp).sum(axis=1)
        match = inter / self.window
        best = float(match.max())
        ok = match >= self.vigilance
        if ok.any():
            j = int(np.argmax(np.where(ok, inter / (self.alpha + self._norms), -1.0)))
            w = weights[j]
            w[:] = self.beta * np.minimum(w, inp) + (1.0 - self.beta) * w
            self._norms[j] = w.sum()
        elif n_cat < self.max_categories:
            self._W = np.concatenate([self._W, inp])
            self._norms = np.concatenate([self._norms, [inp.sum()]])
        raw = (1.0 - best) / self._scale
        return raw if raw < 1.0 else 1.0

    def _raw_many(self, x: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
        # category learning is sequential by nature: the batch path runs the same step per point
        out = np.empty(len(x))
        step = self._raw_one
        for i, (v, a, b) in enumerate(zip(x.tolist(), lo.tolist(), hi.tolist())):
            out[i] = step(v, a, b)
        return out
