"""Small-sample statistics for rates (accuracy, error ratio) under delayed and partial labels.

    >>> wilson_interval(45, 50)
    (0.786..., 0.956...)
    >>> r = proportion_drop_test(successes=70, n=100, baseline=0.9)
    >>> r.significant, r.p_value < 1e-6
    (True, True)
    >>> proportion_drop_test(0, 0, baseline=0.9).significant   # no labels yet
    False
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.base import Detector, register
from detectors.errors import InvalidInput
from detectors.types import Direction


def _check(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise InvalidInput(f"need 0 <= successes <= n, got successes={successes}, n={n}")


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(f"confidence must be in (0, 1), got {confidence}")
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    _check(successes, n)
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def agresti_coull_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Agresti-Coull ("add z²/2 successes and failures") interval; (0, 1) when n == 0."""
    _check(successes, n)
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    n_t = n + z * z
    p_t = (successes + z * z / 2.0) / n_t
    half = z * math.sqrt(p_t * (1 - p_t) / n_t)
    return max(0.0, p_t - half), min(1.0, p_t + half)


@dataclass(frozen=True, slots=True)
class RateTestResult:
    """Outcome of a one-sided exact binomial test of an observed rate against a baseline.

    ``low``/``high`` is the Wilson interval (at 1 - alpha) of the observed rate.
    """

    p_value: float
    observed: float
    baseline: float
    low: float
    high: float
    significant: bool
    n: int = 0


def _binom_test(successes: int, n: int, baseline: float, alternative: str, alpha: float) -> RateTestResult:
    _check(successes, n)
    if not 0.0 <= baseline <= 1.0:
        raise InvalidInput(f"baseline must be in [0, 1], got {baseline}")
    if not 0.0 < alpha < 1.0:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return RateTestResult(1.0, math.nan, baseline, 0.0, 1.0, False, 0)
    from scipy.stats import binomtest

    p = float(binomtest(successes, n, baseline, alternative=alternative).pvalue)
    low, high = wilson_interval(successes, n, 1.0 - alpha)
    return RateTestResult(p, successes / n, baseline, low, high, p < alpha, n)


def proportion_drop_test(successes: int, n: int, baseline: float, alpha: float = 0.01) -> RateTestResult:
    """Exact one-sided binomial test that the rate is *below* ``baseline`` (e.g. accuracy fell).

    Only labeled predictions count: pass the labeled ones as ``n``. With n == 0 the result is not
    significant and the p-value is 1.0.
    """
    return _binom_test(successes, n, baseline, "less", alpha)


def proportion_rise_test(successes: int, n: int, baseline: float, alpha: float = 0.01) -> RateTestResult:
    """Exact one-sided binomial test that the rate is *above* ``baseline`` (e.g. error ratio rose)."""
    return _binom_test(successes, n, baseline, "greater", alpha)


@register
class BernoulliCUSUM(Detector):
    """CUSUM for a Bernoulli stream (1 = event, e.g. an error or a wrong prediction).

    Accumulates the log-likelihood ratio of ``p1`` (the out-of-control rate) against ``p0`` (the
    baseline); alarms when the sum exceeds ``h``. ``p1`` defaults to ``min(0.99, 2 * p0)`` for
    ``direction="up"`` and ``p0 / 2`` for ``"down"``. Labels may arrive late and only for some
    predictions: feed each label when it arrives; NaN (no label) is reported and skipped. The score is
    ``min(1, S / h)`` scaled so that 0.99 is reached exactly at ``S = h``.

    >>> d = BernoulliCUSUM(p0=0.05, h=5.0)
    >>> for _ in range(200):
    ...     _ = d.update(0.0)
    >>> for _ in range(15):
    ...     _ = d.update(1.0)
    >>> d.state.value
    'anomalous'
    """

    name = "bernoulli_cusum"
    input_kind = "binary"
    state_keys = ("_s", "_n")

    def __init__(self, p0: float = 0.05, p1: float | None = None, h: float = 5.0, direction: str = "up",
                 warmup: int = 0) -> None:
        if not 0.0 < p0 < 1.0:
            raise InvalidInput(f"p0 must be in (0, 1), got {p0}")
        watch = Direction(direction)
        if watch is Direction.BOTH:
            raise InvalidInput("BernoulliCUSUM watches one side: direction must be 'up' or 'down'")
        if p1 is None:
            p1 = min(0.99, 2.0 * p0) if watch is Direction.UP else p0 / 2.0
        if not 0.0 < p1 < 1.0 or p1 == p0 or ((p1 > p0) != (watch is Direction.UP)):
            raise InvalidInput(f"p1 must be in (0, 1) on the watched side of p0={p0}, got {p1}")
        if h <= 0:
            raise InvalidInput(f"h must be > 0, got {h}")
        self.p0 = float(p0)
        self.p1 = float(p1)
        self.h = float(h)
        self.watch = watch
        self.warmup = int(warmup)
        self._w1 = math.log(self.p1 / self.p0)
        self._w0 = math.log((1 - self.p1) / (1 - self.p0))
        super().__init__()

    def reset(self) -> None:
        self._s = 0.0
        self._n = 0
        self.score = 0.0
        self.state = self.state.WARMUP
        self.direction = self.watch

    def update(self, value: float, timestamp: float | None = None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return self._invalid()
        if not (x == 0.0 or x == 1.0):
            return self._invalid()
        s = self._s + (self._w1 if x == 1.0 else self._w0)
        self._s = max(0.0, s)
        self._n += 1
        self.direction = self.watch
        return self._judge(self._score(self._s), self._n > self.warmup)

    def _score(self, s: float) -> float:
        # 0.99 at s == h; saturating at 1
        return min(1.0, 0.99 * s / self.h)

    def reset_after_alarm(self) -> None:
        """Restart the sum (after the alarm was handled), keeping the configuration."""
        self._s = 0.0
