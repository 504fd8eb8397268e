"""A combination of detectors with a calibrated output: anomaly likelihood of the recent member scores."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import signal, special

from detectors.base import REGISTRY, Detector, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import as_float_array

_SQRT2 = math.sqrt(2.0)


@register
class AnomalyLikelihood(Detector):
    """Combines member detectors and calibrates the result against its own recent history.

    Each point, the members' scores are combined by their maximum (``raw``). A short EWMA of ``raw``
    (weight ``alpha_short``) is compared with the long-run mean and spread of that average (EWMAs with
    weight ``alpha_long``, bias-corrected): ``z = (short - mean) / sd``, one-sided tail ``p = Phi(-z)``,
    score ``1 - p**gamma`` with ``gamma = ln 0.01 / ln p_alarm`` (0.99 exactly at ``p = p_alarm``). This
    is the "anomaly likelihood" idea of Numenta's HTM detector: it turns any member's scale into a
    probability that the recent scores are unusually high *for this series*, so one threshold fits
    many series.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=3000)
    >>> x[2500:2520] += 6
    >>> d = AnomalyLikelihood(members=("ewma", "spectral_residual"))
    >>> s = d.score_batch(x)
    >>> bool(s[2500:2520].max() >= 0.99), float((s[:2500] >= 0.99).mean()) < 0.01
    (True, True)
    """

    name = "anomaly_likelihood"
    state_keys = ("member_states", "_n", "_short", "_mean", "_var")

    def __init__(self, members: Sequence[str] = ("ewma", "spectral_residual"), alpha_short: float = 0.2,
                 alpha_long: float = 0.002, p_alarm: float = 1e-4, warmup: int = 300) -> None:
        members = tuple(members)
        unknown = [m for m in members if m not in REGISTRY or m == self.name]
        if not members or unknown:
            raise InvalidInput(f"members must be registered detectors; unknown: {unknown or 'none given'}")
        if not 0 < alpha_short < 1 or not 0 < alpha_long < 1 or not 0 < p_alarm < 1 or warmup < 2:
            raise InvalidInput("need alpha_short, alpha_long, p_alarm in (0, 1) and warmup >= 2")
        self.members = members
        self.alpha_short = float(alpha_short)
        self.alpha_long = float(alpha_long)
        self.p_alarm = float(p_alarm)
        self.warmup = int(warmup)
        self._gamma = math.log(0.01) / math.log(self.p_alarm)
        super().__init__()

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["members"] = list(self.members)
        return p

    def reset(self) -> None:
        self._dets = [REGISTRY[m]() for m in self.members]
        self._n = 0
        self._short = 0.0
        self._mean = 0.0      # raw EWMA (starts at 0, bias-corrected when read)
        self._var = 0.0
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    @property
    def member_states(self) -> list[dict[str, Any]]:
        return [d.checkpoint() for d in self._dets]

    @member_states.setter
    def member_states(self, states: list[dict[str, Any]]) -> None:
        self._dets = [Detector.restore(s) for s in states]

    def _score(self, z: float) -> float:
        if z <= 0.0:
            return 0.0
        log_p = math.log(0.5 * math.erfc(z / _SQRT2)) if z < 30.0 else float(special.log_ndtr(-z))
        return 1.0 - math.exp(self._gamma * log_p)

    def update(self, value: float, timestamp: float | None = None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return self._invalid()
        if not math.isfinite(x):
            for d in self._dets:
                d.update(x, timestamp)
            return self._invalid()
        raw = max(d.update(x, timestamp) for d in self._dets)
        lead = max(self._dets, key=lambda d: d.score)
        n = self._n
        a_s = self.alpha_short
        short = raw if n == 0 else a_s * raw + (1.0 - a_s) * self._short
        a, b = self.alpha_long, 1.0 - self.alpha_long
        score = 0.0
        warm = n >= self.warmup
        mean = self._mean / (1.0 - b ** n) if n > 0 else 0.0
        dev = short - mean
        if warm:
            var = self._var / (1.0 - b ** (n - 1)) if n > 1 else 0.0
            sd = math.sqrt(var)
            z = dev / (max(1e-06, sd))
            score = self._score(z)
            self.direction = lead.direction
        if n > 0:
            self._var = (a * b) * (dev * dev) + b * self._var
        self._mean = a * short + b * self._mean
        self._short = short
        self._n = n + 1
        return self._judge(score, warm)

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Members' vectorized paths, then three lfilter passes for the calibration."""
        values = as_float_array(values)
        out = np.zeros(len(values))
        member_scores = np.vstack([d.score_batch(values, timestamps) for d in self._dets])
        valid = np.isfinite(values)
        pos = np.flatnonzero(valid)
        if len(pos) == 0:
            if len(values):
                self._invalid()
            return out
        raw = member_scores[:, pos].max(axis=0)
        n0 = self._n
        a_s = self.alpha_short
        if n0 == 0:
            shorts, _ = signal.lfilter([a_s], [1.0, -(1.0 - a_s)], raw[1:], zi=[(1.0 - a_s) * raw[0]])
            shorts = np.concatenate([[raw[0]], shorts])
        else:
            shorts, _ = signal.lfilter([a_s], [1.0, -(1.0 - a_s)], raw, zi=[(1.0 - a_s) * self._short])
        a, b = self.alpha_long, 1.0 - self.alpha_long
        counts = (n0 + np.arange(len(raw))).astype(float)
        raw_means, _ = signal.lfilter([a], [1.0, -b], shorts, zi=[b * self._mean])
        prev_raw_mean = np.concatenate([[self._mean], raw_means[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(counts > 0, prev_raw_mean / (1.0 - b ** counts), 0.0)
        d = shorts - mean
        upd = counts > 0
        dd = np.where(upd, d * d, 0.0)
        # var is only updated from the second point on: feed zeros with no decay at the first point
        var_raw = np.empty(len(raw))
        v0 = self._var
        start = 0
        if n0 == 0:
            var_raw[0] = v0
            start = 1
        if start < len(raw):
            vr, _ = signal.lfilter([a * b], [1.0, -b], dd[start:], zi=[b * v0])
            var_raw[start:] = vr
        prev_var_raw = np.concatenate([[v0], var_raw[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(counts > 1, prev_var_raw / (1.0 - b ** (counts - 1)), 0.0)
        sd = np.sqrt(var)
        z = d / np.where(sd > 1e-6, sd, 1e-6)
        warm = counts >= self.warmup
        z = np.where(warm, z, 0.0)
        with np.errstate(divide="ignore"):
            log_p = np.log(0.5 * special.erfc(z / _SQRT2))
            big = z >= 30.0
            if big.any():
                log_p[big] = special.log_ndtr(-z[big])
        s = np.where(z > 0.0, 1.0 - np.exp(self._gamma * log_p), 0.0)
        out[pos] = s
        if warm.any():
            lead = max(self._dets, key=lambda det: det.score)
            self.direction = lead.direction
        self._short = float(shorts[-1])
        self._mean = float(raw_means[-1])
        self._var = float(var_raw[-1])
        self._n = n0 + len(raw)
        self._judge(float(s[-1]), bool(warm[-1]))
        if not valid[-1]:
            self._invalid()
        return out
