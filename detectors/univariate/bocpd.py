"""Bayesian online change-point detection (Adams & MacKay 2007), run length truncated for bounded state."""
from __future__ import annotations

import math

import numpy as np
from scipy import special

from detectors.base import Detector, finite_or_none, register
from detectors.errors import InvalidInput
from detectors.types import DetectorState, Direction
from detectors.univariate._common import as_float_array


def _lse(v: np.ndarray) -> float:
    m = float(np.max(v))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(v - m))))


@register
class BOCPD(Detector):
    """Posterior probability that the series changed regime within the last ``recent`` points.

    Gaussian observations with unknown mean and variance (Normal-Gamma prior, set from the first
    ``warmup`` points), constant hazard ``1 / expected_run``; the run-length distribution is truncated
    at ``max_run`` (bounded state, O(max_run) per point). Score = P(run length < ``recent``), a
    probability in [0, 1]; alarm at 0.99. There is no faster batch formulation of the recursion, so
    ``score_batch`` runs the same per-point update (identical by construction).

    >>> d = BOCPD()
    >>> for t in range(200):
    ...     _ = d.update(float(t % 3))
    >>> max(d.update(12.0) for _ in range(4)) >= 0.99
    True
    """

    name = "bocpd"
    state_keys = ("_log_r", "_mu", "_kappa", "_alpha", "_beta", "_warm_buf", "_prior")

    def __init__(self, expected_run: float = 250.0, max_run: int = 100, recent: int = 5, warmup: int = 30,
                 prior_strength: float = 1.0) -> None:
        if expected_run <= 1 or max_run < recent + 1 or recent < 1 or warmup < 3 or prior_strength <= 0:
            raise InvalidInput("need expected_run > 1, max_run > recent >= 1, warmup >= 3, prior_strength > 0")
        self.expected_run = float(expected_run)
        self.max_run = int(max_run)
        self.recent = int(recent)
        self.warmup = int(warmup)
        self.prior_strength = float(prior_strength)
        self._log_h = math.log(1.0 / self.expected_run)
        self._log_1mh = math.log1p(-1.0 / self.expected_run)
        super().__init__()

    def reset(self) -> None:
        self._log_r = np.zeros(0)          # log P(run length = r), r = 0..len-1
        self._mu = np.zeros(0)
        self._kappa = np.zeros(0)
        self._alpha = np.zeros(0)
        self._beta = np.zeros(0)
        self._warm_buf: list[float] = []
        self._prior = [0.0, 1.0, 1.0, 1.0]  # mu0, kappa0, alpha0, beta0
        self._log_norm: np.ndarray | None = None
        self.score = 0.0
        self.state = DetectorState.WARMUP
        self.direction = Direction.BOTH

    def _start(self) -> None:
        x = np.asarray(self._warm_buf)
        var = float(np.var(x))
        scale = max(var, 1e-12 * max(1.0, float(np.mean(x)) ** 2), 1e-300)
        a0 = 1.0 + self.prior_strength
        self._prior = [float(np.mean(x)), self.prior_strength, a0, scale * (a0 - 1.0)]
        mu0, k0, a0, b0 = self._prior
        self._lgamma_terms()
        self._log_r = np.zeros(1)
        self._mu, self._kappa = np.array([mu0]), np.array([k0])
        self._alpha, self._beta = np.array([a0]), np.array([b0])

    def _lgamma_terms(self) -> np.ndarray:
        # alpha of run length r is alpha0 + r/2, so the Student-t normalizers depend on r only
        a = self._prior[2] + 0.5 * np.arange(self.max_run + 1)
        nu = 2.0 * a
        self._log_norm = np.asarray(
            special.gammaln((nu + 1.0) / 2.0) - special.gammaln(nu / 2.0) - 0.5 * np.log(np.pi * nu), dtype=float)
        return self._log_norm

    def update(self, value: float, timestamp: float | None = None) -> float:
        x = finite_or_none(value)
        if x is None:
            return self._invalid()
        if len(self._log_r) == 0:
            self._warm_buf.append(x)
            if len(self._warm_buf) >= self.warmup:
                self._start()
            return self._judge(0.0, False)
        mu, kappa, alpha, beta = self._mu, self._kappa, self._alpha, self._beta
        # Student-t predictive of x under each run length
        nu = 2.0 * alpha
        scale2 = beta * (kappa + 1.0) / (alpha * kappa)
        zz = (x - mu) ** 2 / (nu * scale2)
        log_norm = getattr(self, "_log_norm", None)
        if log_norm is None or len(log_norm) != self.max_run + 1:
            log_norm = self._lgamma_terms()
        log_pred = log_norm[: len(mu)] - 0.5 * np.log(scale2) - (nu + 1.0) / 2.0 * np.log1p(zz)
        joint = self._log_r + log_pred
        grow = joint + self._log_1mh
        cp = _lse(joint + self._log_h)
        log_r = np.concatenate([[cp], grow])
        mu0, k0, a0, b0 = self._prior
        new_mu = np.concatenate([[mu0], (kappa * mu + x) / (kappa + 1.0)])
        new_kappa = np.concatenate([[k0], kappa + 1.0])
        new_alpha = np.concatenate([[a0], alpha + 0.5])
        new_beta = np.concatenate([[b0], beta + kappa * (x - mu) ** 2 / (2.0 * (kappa + 1.0))])
        if len(log_r) > self.max_run:
            # fold the oldest run lengths into the last kept one (bounded state)
            tail = _lse(log_r[self.max_run - 1:])
            log_r = np.concatenate([log_r[: self.max_run - 1], [tail]])
            new_mu, new_kappa = new_mu[: self.max_run], new_kappa[: self.max_run]
            new_alpha, new_beta = new_alpha[: self.max_run], new_beta[: self.max_run]
        log_r = log_r - _lse(log_r)
        self._log_r, self._mu, self._kappa, self._alpha, self._beta = log_r, new_mu, new_kappa, new_alpha, new_beta
        # the change point happened before the point that started the short runs; exclude r == 0 (= hazard)
        p_recent = float(np.exp(_lse(log_r[1: self.recent + 1]))) if len(log_r) > 1 else 0.0
        score = min(1.0, max(0.0, p_recent))
        old = float(mu[int(np.argmax(joint))])      # mean of the regime the point was most likely judged by
        if x != old:
            self.direction = Direction.UP if x > old else Direction.DOWN
        return self._judge(score, True)

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """The per-point recursion over the array (the recursion has no vectorized form)."""
        values = as_float_array(values)
        return np.array([self.update(float(x)) for x in values], dtype=float)
