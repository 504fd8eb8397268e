"""``art_context``: the context learner and the fuzzy ART learner side by side, one rest period."""
from __future__ import annotations

from typing import Any

import numpy as np

from detectors.base import Detector, register
from detectors.univariate._novelty import FloatArray, NoveltyDetector
from detectors.univariate.art import FuzzyART
from detectors.univariate.context import ContextNovelty


@register
class ArtContext(NoveltyDetector):
    """Raw novelty = the larger of ``context``'s (a new transition) and ``fuzzy_art``'s (a new shape).

    The two learners see different things: the context learner a level that never followed the
    recent levels, the ART learner a short window whose shape matches no stored category. Both share
    this detector's value range (NAB's or learned online), rest period and calibration (see their
    classes for the parameters, which keep their names here with ``art_`` or ``context_`` prefixes
    where they differ).

    >>> d = ArtContext()
    >>> for t in range(600):
    ...     _ = d.update(float(t % 10), t)
    >>> d.update(55.0) >= d.alarm_threshold
    True
    """

    name = "art_context"
    state_keys = (*NoveltyDetector._base_keys, "context_state", "art_state")

    def __init__(self, bins: int = 8, max_order: int = 3, support: float = 0.5, window: int = 4,
                 vigilance: float = 0.95, value_min: float | None = None, value_max: float | None = None,
                 probation: int | None = None, warmup: int = 150, margin: float = 0.25,
                 mask_level: float = 0.75, rest_fraction: float = 0.2) -> None:
        self.bins, self.max_order, self.support = bins, max_order, support
        self.window, self.vigilance = window, vigilance
        # validate the members' own parameters once, here
        self._make_members()
        super().__init__(value_min, value_max, probation, warmup, margin, mask_level, rest_fraction)

    def _make_members(self) -> tuple[ContextNovelty, FuzzyART]:
        return (ContextNovelty(bins=self.bins, max_order=self.max_order, support=self.support),
                FuzzyART(window=self.window, vigilance=self.vigilance))

    def _reset_model(self) -> None:
        self._ctx, self._art = self._make_members()

    @property
    def context_state(self) -> dict[str, Any]:
        return self._ctx.checkpoint()

    @context_state.setter
    def context_state(self, state: dict[str, Any]) -> None:
        member = Detector.restore(state)
        assert isinstance(member, ContextNovelty)
        self._ctx = member

    @property
    def art_state(self) -> dict[str, Any]:
        return self._art.checkpoint()

    @art_state.setter
    def art_state(self, state: dict[str, Any]) -> None:
        member = Detector.restore(state)
        assert isinstance(member, FuzzyART)
        self._art = member

    def _raw_one(self, x: float, lo: float, hi: float) -> float:
        c = self._ctx._raw_one(x, lo, hi)
        a = self._art._raw_one(x, lo, hi)
        return c if c >= a else a

    def _raw_many(self, x: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
        c = self._ctx._raw_many(x, lo, hi)
        a = self._art._raw_many(x, lo, hi)
        return np.where(c >= a, c, a)
