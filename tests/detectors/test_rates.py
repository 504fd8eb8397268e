"""Rate statistics against scipy/statsmodels reference values."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from detectors.errors import InvalidInput
from detectors.rates import (
    BernoulliCUSUM,
    agresti_coull_interval,
    proportion_drop_test,
    proportion_rise_test,
    wilson_interval,
)
from detectors.types import DetectorState


def test_wilson_reference_values() -> None:
    # statsmodels.stats.proportion.proportion_confint(45, 50, method="wilson")
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.7863976856, abs=1e-9)
    assert hi == pytest.approx(0.9565242351, abs=1e-9)
    # zero successes still gives a non-degenerate upper bound
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775327998, abs=1e-9)


def test_agresti_coull_reference_values() -> None:
    # statsmodels method="agresti_coull"
    lo, hi = agresti_coull_interval(45, 50)
    assert lo == pytest.approx(0.7820622661, abs=1e-9)
    assert hi == pytest.approx(0.9608596546, abs=1e-9)


def test_no_labels_yet_is_not_significant() -> None:
    r = proportion_drop_test(0, 0, baseline=0.9)
    assert r.p_value == 1.0 and not r.significant
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_drop_test_equals_scipy_binomtest() -> None:
    r = proportion_drop_test(80, 100, baseline=0.9, alpha=0.01)
    want = stats.binomtest(80, 100, 0.9, alternative="less").pvalue
    assert r.p_value == pytest.approx(want, rel=1e-12)
    assert r.significant is bool(want < 0.01)
    assert r.observed == 0.8 and r.low < 0.8 < r.high


def test_small_samples_do_not_alarm_on_one_mistake() -> None:
    # 4 of 5 correct against a 90% baseline: perfectly plausible
    assert not proportion_drop_test(4, 5, baseline=0.9).significant


def test_rise_test_flags_an_error_burst() -> None:
    r = proportion_rise_test(30, 200, baseline=0.02)
    assert r.significant and r.p_value < 1e-6


def test_bad_counts_raise() -> None:
    with pytest.raises(InvalidInput):
        proportion_drop_test(5, 3, baseline=0.5)
    with pytest.raises(InvalidInput):
        proportion_drop_test(1, 3, baseline=1.5)


@given(st.integers(0, 500), st.integers(1, 500))
def test_intervals_contain_the_observed_rate(k: int, n: int) -> None:
    k = min(k, n)
    for lo, hi in (wilson_interval(k, n), agresti_coull_interval(k, n)):
        assert 0.0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1.0


def test_bernoulli_cusum_catches_accuracy_drop_with_sparse_labels() -> None:
    rng = np.random.default_rng(0)
    d = BernoulliCUSUM(p0=0.1, h=5.0)       # event = wrong prediction
    # labels for only some predictions; NaN = no label arrived
    errors = (rng.random(3000) < 0.1).astype(float)
    errors[rng.random(3000) < 0.5] = np.nan
    s = d.score_batch(errors)
    assert np.mean(s >= d.alarm_threshold) < 0.01
    bad = (rng.random(200) < 0.4).astype(float)
    s2 = d.score_batch(bad)
    assert np.argmax(s2 >= d.alarm_threshold) < 60 and d.state is DetectorState.ANOMALOUS
