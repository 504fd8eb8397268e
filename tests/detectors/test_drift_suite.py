"""DriftSuite against scipy reference values, plus edge cases a user hits (NaN, constants, categories)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors.drift import DriftReport, DriftSuite, FeatureDrift, benjamini_hochberg
from detectors.errors import InvalidInput


@pytest.mark.parametrize(("n", "m"), [(40, 25), (500, 300), (3000, 3000), (12000, 9000), (30000, 20000)])
def test_ks_matches_scipy_exact_and_asymptotic(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    ref = np.column_stack([rng.normal(size=n), np.round(rng.normal(size=n) * 3), rng.exponential(size=n)])
    cur = np.column_stack([rng.normal(0.1, 1, size=m), np.round(rng.normal(size=m) * 3),
                           rng.exponential(1.2, size=m)])
    report = DriftSuite(tests=("ks",)).fit(ref).compare(cur)
    assert [f.name for f in report.features] == ["f0", "f1", "f2"]
    for j, f in enumerate(report.features):
        want = stats.ks_2samp(ref[:, j], cur[:, j])
        assert f.statistic == pytest.approx(want.statistic, abs=1e-9)
        assert f.p_value == pytest.approx(want.pvalue, rel=1e-6, abs=1e-300)


def test_detects_shift_and_names_the_feature() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5000, 4))
    cur = rng.normal(size=(2000, 4))
    cur[:, 2] += 0.3
    report = DriftSuite(tests=("ks", "psi")).fit(ref, feature_names=list("abcd")).compare(cur)
    assert report.drift is True
    assert report.drifted_features == ["c"]


def test_no_drift_on_same_distribution() -> None:
    rng = np.random.default_rng(1)
    suite = DriftSuite(tests=("ks", "psi", "wasserstein", "jsd")).fit(rng.normal(size=(20000, 10)))
    report = suite.compare(rng.normal(size=(10000, 10)))
    assert report.drift is False
    assert all(not f.drift for f in report.features)


def test_psi_known_value_and_threshold() -> None:
    ref = np.repeat(np.arange(10.0), 100)                # ten equal bins
    cur = np.concatenate([np.repeat(np.arange(5.0), 150), np.repeat(np.arange(5.0, 10.0), 50)])
    report = DriftSuite(tests=("psi",), psi_threshold=0.2).fit(ref).compare(cur)
    (f,) = report.features
    want = 5 * (0.15 - 0.1) * np.log(1.5) + 5 * (0.05 - 0.1) * np.log(0.5)
    assert f.statistic == pytest.approx(want, rel=1e-12)
    assert f.p_value is None and f.drift is bool(want >= 0.2) is True


def test_constant_reference_gives_finite_statistics_and_catches_a_change() -> None:
    ref = np.column_stack([np.full(1000, 3.0), np.arange(1000.0)])
    suite = DriftSuite(tests=("ks", "psi", "wasserstein", "jsd")).fit(ref, feature_names=["const", "x"])
    same = suite.compare(ref.copy())
    assert all(np.isfinite(f.statistic) for f in same.features)
    assert "const" not in same.drifted_features
    moved = ref.copy()
    moved[:, 0] = 4.0
    report = suite.compare(moved)
    assert all(np.isfinite(f.statistic) for f in report.features)
    assert {f.test for f in report.features if f.name == "const" and f.drift} == {"ks", "psi", "wasserstein",
                                                                                   "jsd"}


def test_nan_rows_in_current_are_ignored_and_counted() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(3000, 2))
    cur = rng.normal(size=(1000, 2))
    cur[:100, 0] = np.nan
    cur[5, 1] = np.inf
    report = DriftSuite(tests=("ks",)).fit(ref).compare(cur)
    assert report.missing == {"f0": 100, "f1": 1}
    want = stats.ks_2samp(ref[:, 0], cur[100:, 0])
    assert report.features[0].p_value == pytest.approx(want.pvalue, rel=1e-6)


def test_chi2_for_categorical_columns_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(size=2000), "color": rng.choice(["red", "green", "blue"], 2000,
                                                                        p=[0.5, 0.3, 0.2])})
    cur = pd.DataFrame({"x": rng.normal(size=800), "color": rng.choice(["red", "green", "blue", "pink"], 800,
                                                                       p=[0.3, 0.3, 0.3, 0.1])})
    report = DriftSuite(tests=("ks", "chi2")).fit(ref).compare(cur)
    chi = [f for f in report.features if f.name == "color"]
    assert [f.test for f in chi] == ["chi2"]
    cats = ["blue", "green", "red", "pink"]
    table = np.array([[int((ref.color == c).sum()) for c in cats], [int((cur.color == c).sum()) for c in cats]])
    want = stats.chi2_contingency(table)
    assert chi[0].statistic == pytest.approx(want.statistic, rel=1e-12)
    assert chi[0].p_value == pytest.approx(want.pvalue, rel=1e-9)
    assert report.drifted_features == ["color"]


def test_benjamini_hochberg_matches_the_textbook_example() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    # sorted: .005 .01 .03 .04 .2 -> *5/rank: .025 .025 .05 .05 .2
    np.testing.assert_allclose(benjamini_hochberg(p), [0.025, 0.05, 0.05, 0.025, 0.2])


def _hand_written_bh(p_values: list[float]) -> np.ndarray:
    """The step-up adjustment incidentd computed by hand before it used scipy's (kept as the oracle)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-12, 0.01, 0.05, 1.0])),
                min_size=1, max_size=60),
       st.sampled_from([0.001, 0.01, 0.05, 0.1]))
def test_benjamini_hochberg_gives_the_old_hand_written_decisions(p: list[float], alpha: float) -> None:
    ours, old = benjamini_hochberg(p), _hand_written_bh(p)
    np.testing.assert_allclose(ours, old, rtol=1e-12, atol=0)
    # rounding can only matter at alpha exactly; the drift decisions (adjusted < alpha) stay the same
    near = np.isclose(old, alpha, rtol=1e-12, atol=0)
    assert ((ours < alpha) == (old < alpha))[~near].all()


def test_benjamini_hochberg_of_nothing_is_empty() -> None:
    assert benjamini_hochberg([]).shape == (0,)


def test_correction_turns_off_marginal_single_feature_findings() -> None:
    # 50 features of pure noise: uncorrected alpha=0.05 finds some, BH almost surely none.
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=(2000, 50)), rng.normal(size=(2000, 50))
    raw = DriftSuite(tests=("ks",), alpha=0.05, correction="none").fit(ref).compare(cur)
    bh = DriftSuite(tests=("ks",), alpha=0.05).fit(ref).compare(cur)
    assert len(raw.drifted_features) >= 1
    assert bh.drift is False


def test_to_dict_is_the_cli_json_shape() -> None:
    rng = np.random.default_rng(5)
    report = DriftSuite(tests=("ks", "psi")).fit(rng.normal(size=(500, 2))).compare(rng.normal(size=(400, 2)))
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d) == {"drift", "features"}
    assert len(d["features"]) == 4
    for f in d["features"]:
        assert set(f) == {"name", "test", "statistic", "p_value", "drift"}
    assert {f["test"]: f["p_value"] is None for f in d["features"]} == {"ks": False, "psi": True}
    assert isinstance(report, DriftReport) and isinstance(report.features[0], FeatureDrift)


def test_pca_multivariate_catches_a_correlation_break_ks_misses() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(size=(4000, 1))
    ref = np.hstack([z, z + 0.05 * rng.normal(size=(4000, 1))])
    cur = rng.normal(size=(2000, 2))             # same marginals (nearly), correlation gone
    report = DriftSuite(tests=("ks", "pca")).fit(ref).compare(cur)
    pca = [f for f in report.features if f.test == "pca"]
    assert pca and pca[0].drift
    assert report.drift


def test_mmd_permutation_test_separates_shift_from_noise() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(400, 2))
    suite = DriftSuite(tests=("mmd",), mmd_permutations=199, alpha=0.05).fit(ref)
    same = suite.compare(rng.normal(size=(300, 2)))
    assert not same.drift
    shifted = rng.normal(size=(300, 2))
    shifted[:, 0] += 1.0
    report = suite.compare(shifted)
    assert report.drifted_features == ["f0"]
    assert report.features[0].p_value == pytest.approx(1 / 200)   # no permutation reached the observed MMD


@pytest.mark.parametrize("bad", [
    lambda s: s.compare(np.zeros((10, 3))),
    lambda s: s.compare(np.zeros((0, 2))),
    lambda s: DriftSuite(tests=("nope",)),
    lambda s: DriftSuite().fit(np.zeros((0, 2))),
    lambda s: DriftSuite().fit(np.full((5, 1), np.nan)),
    lambda s: DriftSuite().compare(np.zeros((3, 2))),
])
def test_bad_input_raises_invalid_input(bad) -> None:  # type: ignore[no-untyped-def]
    suite = DriftSuite().fit(np.random.default_rng(0).normal(size=(100, 2)))
    with pytest.raises(InvalidInput):
        bad(suite)


def test_dataframe_missing_column_is_named() -> None:
    suite = DriftSuite().fit(pd.DataFrame({"a": [1.0, 2, 3], "b": [1.0, 2, 3]}))
    with pytest.raises(InvalidInput, match="'b'"):
        suite.compare(pd.DataFrame({"a": [1.0, 2]}))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
       st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60))
def test_ks_equals_scipy_on_any_finite_samples(a: list[float], b: list[float]) -> None:
    f = DriftSuite(tests=("ks",)).fit(np.array(a)).compare(np.array(b)).features[0]
    want = stats.ks_2samp(a, b)
    assert f.statistic == pytest.approx(want.statistic, abs=1e-9)
    assert f.p_value == pytest.approx(want.pvalue, rel=1e-6)


def test_sliding_window_keeps_only_recent_rows() -> None:
    from detectors.drift import SlidingWindowDrift

    rng = np.random.default_rng(8)
    ref = rng.normal(size=(3000, 2))
    sw = SlidingWindowDrift(DriftSuite(tests=("ks",)).fit(ref), window=400)
    with pytest.raises(InvalidInput):
        sw.compare()
    sw.add(rng.normal(size=(1000, 2)) + [3.0, 0.0])      # old, drifted rows ...
    sw.add(rng.normal(size=(400, 2)))                     # ... pushed out by 400 normal ones
    report = sw.compare()
    assert report.n_current == 400 and not report.drift
    sw.add(rng.normal(size=(250, 2)) + [0.0, 1.0])
    assert sw.compare().drifted_features == ["f1"]
    with pytest.raises(InvalidInput):
        sw.add(np.zeros((3, 5)))


@pytest.mark.parametrize("n", [141, 1000, 20_000, 50_000])
def test_fast_ks_p_values_equal_scipys_kstwo(n: int) -> None:
    """Our vectorized Smirnov sum replaces scipy's slow branch; it must give scipy's numbers."""
    from detectors.drift import _kstwo_sf

    d = np.array([0.3 / np.sqrt(n), 1.5 / np.sqrt(n), 3.0 / np.sqrt(n), 10.0 / np.sqrt(n), 0.5, 0.7])
    d = d[d < 1.0]
    ours = _kstwo_sf(d, np.full(len(d), float(n)))
    ref = stats.kstwo.sf(d, n)
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-300)
