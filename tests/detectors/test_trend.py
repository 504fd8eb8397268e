"""The trend detector and its statistics: what a slow leak or a creeping latency looks like to them."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from detectors.errors import InvalidInput
from detectors.univariate import RobustZ
from detectors.univariate.trend import TheilSen, mann_kendall_z, theil_sen_slope, trend


def test_theil_sen_slope_equals_scipy_and_ignores_outliers() -> None:
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 600, 80))
    x = 2.5 * t + rng.normal(0, 5, 80)
    x[[5, 40, 70]] += 5000.0          # three wild points: least squares would tilt, the median does not
    assert theil_sen_slope(t, x) == pytest.approx(stats.theilslopes(x, t).slope, rel=1e-12)
    assert theil_sen_slope(t, x) == pytest.approx(2.5, abs=0.05)


def test_mann_kendall_z_matches_kendall_tau_test_without_ties() -> None:
    rng = np.random.default_rng(4)
    x = np.cumsum(rng.normal(0.1, 1.0, 50))
    z = mann_kendall_z(x)
    # scipy's Kendall tau test against time, without ties, is the same statistic (two-sided p-value)
    p = stats.kendalltau(np.arange(50), x).pvalue
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(p, rel=0.05)
    assert mann_kendall_z(np.full(30, 7.0)) == 0.0


def test_slow_ramp_is_caught_by_the_trend_but_not_by_a_level_detector() -> None:
    """A latency that creeps 2% of its noise per point never looks unusual next to its own recent past."""
    rng = np.random.default_rng(5)
    n = 1500
    x = 10.0 + rng.normal(size=n)
    x[500:] += 0.02 * np.arange(n - 500)
    level = RobustZ().score_batch(x)
    ramp = TheilSen(window=120, min_periods=60).score_batch(x)
    assert np.mean(level[500:] >= 0.99) < 0.05
    first = np.flatnonzero(ramp[500:] >= 0.99)
    assert len(first) and first[0] < 300


def test_slope_has_units_per_second_with_timestamps() -> None:
    d = TheilSen(window=40, min_periods=10)
    for i in range(60):
        d.update(1e9 + 4e6 * i, 1000.0 + 2.0 * i)     # 4 MB every 2 s
    assert d.slope == pytest.approx(2e6)
    assert d.direction.value == "up" and d.score >= 0.99


def test_out_of_order_timestamps_are_reported_not_learned() -> None:
    d = TheilSen(window=10, min_periods=3)
    for i in range(5):
        d.update(float(i), float(i))
    assert d.update(9.0, 2.0) == 0.0 and d.state.value == "invalid_input"
    assert len(d.checkpoint()["state"]["_values"]) == 5


def test_segment_slopes_tell_levelling_off_from_steady_growth() -> None:
    t = np.arange(0.0, 300.0, 2.0)
    steady = trend(t, 100 + 3.0 * t)
    warm = trend(t, 100 + 600 * (1 - np.exp(-t / 40.0)))
    assert steady.persistence == pytest.approx(1.0) and steady.grows_throughout()
    assert warm.persistence < 0.1
    assert math.isnan(trend(t, np.full(len(t), 5.0)).persistence)


@pytest.mark.parametrize("kwargs", [{"window": 3}, {"min_periods": 2}, {"window": 10, "min_periods": 11},
                                    {"z_alarm": 0.0}, {"direction": "sideways"}])
def test_bad_configuration_is_named(kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        TheilSen(**kwargs)
