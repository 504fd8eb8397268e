"""Drift of a window against a per-version reference, through detectors.drift.DriftSuite."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collector.drift_monitor import DriftMonitor
from detectors.types import Reference

N_FEATURES = 16


def digits_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pixel-like data: 0..16 integers, with some features constant zero as in sklearn's digits."""
    x = np.clip(np.round(rng.normal(8, 4, size=(n, N_FEATURES))), 0, 16)
    x[:, [0, 7, 8]] = 0.0
    return x


@pytest.fixture
def monitor() -> DriftMonitor:
    rng = np.random.default_rng(1)
    mon = DriftMonitor(min_rows=100)
    mon.fit(
        Reference(
            "v1",
            digits_like(rng, 1500),
            rng.integers(0, 10, 1500),
            tuple(f"pixel_{i}" for i in range(N_FEATURES)),
        )
    )
    return mon


def test_same_distribution_is_quiet_and_constant_features_give_no_nan(monitor: DriftMonitor) -> None:
    rng = np.random.default_rng(2)
    for _ in range(5):
        res = monitor.compare("v1", digits_like(rng, 400), rng.integers(0, 10, 400))
        assert res is not None
        assert not res.detected and res.drifted_features == ()
        assert len(res.features) == 2 * N_FEATURES
        assert all(math.isfinite(f.statistic) for f in res.features)
        assert all(f.p_value is None or 0.0 <= f.p_value <= 1.0 for f in res.features)
        const = [f for f in res.features if f.feature == "pixel_0"]
        assert const and all(f.statistic == 0.0 and not f.drift for f in const)
        assert res.prediction_psi is not None and res.prediction_psi < 0.1


def test_shifted_feature_is_detected(monitor: DriftMonitor) -> None:
    rng = np.random.default_rng(3)
    cur = digits_like(rng, 400)
    cur[:, 3] = np.clip(cur[:, 3] + 6, 0, 16)
    res = monitor.compare("v1", cur, rng.integers(0, 10, 400))
    assert res is not None and res.detected
    assert "pixel_3" in res.drifted_features
    ks = next(f for f in res.features if f.feature == "pixel_3" and f.test == "ks")
    assert ks.p_value is not None and ks.p_value < 1e-6


def test_prediction_drift_by_psi(monitor: DriftMonitor) -> None:
    rng = np.random.default_rng(4)
    res = monitor.compare("v1", digits_like(rng, 400), np.full(400, 7))
    assert res is not None and res.prediction_psi is not None and res.prediction_psi > 1.0


def test_too_few_rows_unknown_version_and_missing_values(monitor: DriftMonitor) -> None:
    rng = np.random.default_rng(5)
    assert monitor.compare("v1", digits_like(rng, 99), rng.integers(0, 10, 99)) is None
    assert monitor.compare("v2", digits_like(rng, 400), rng.integers(0, 10, 400)) is None
    assert monitor.compare("v1", digits_like(rng, 400)[:, :5], rng.integers(0, 10, 400)) is None
    cur = digits_like(rng, 400)
    cur[::10, 2] = np.nan  # nulls are ignored per feature, not fatal
    cur[:, 5] = np.nan  # an all-null feature yields no statistic
    res = monitor.compare("v1", cur, rng.integers(0, 10, 400))
    assert res is not None and not res.detected
    assert all(math.isfinite(f.statistic) for f in res.features)


def test_reference_cache_is_bounded_per_version() -> None:
    rng = np.random.default_rng(6)
    mon = DriftMonitor(max_versions=2)
    names = tuple(f"pixel_{i}" for i in range(N_FEATURES))
    for v in ("v1", "v2", "v3"):
        mon.fit(Reference(v, digits_like(rng, 300), rng.integers(0, 10, 300), tuple(names)))
    assert not mon.has("v1") and mon.has("v2") and mon.has("v3")


@pytest.fixture(scope="module")
def digits_monitor() -> tuple[DriftMonitor, np.ndarray]:
    from incidentd.model_server.model import load_digits_split

    split = load_digits_split()
    mon = DriftMonitor(min_rows=200)
    mon.fit(Reference("v1", np.asarray(split.x_train), np.zeros(0, int), tuple(f"px{i}" for i in range(64))))
    return mon, split.x_holdout.astype(float)


CENTRE = [19, 20, 21, 26, 27, 28, 35, 36, 43, 44]


@pytest.mark.parametrize("seed", range(3))
def test_schema_checks_tell_unit_change_unseen_codes_and_shift_apart(digits_monitor, seed) -> None:
    mon, holdout = digits_monitor
    rng = np.random.default_rng(seed)
    x = holdout[rng.integers(0, len(holdout), 400)]
    healthy = mon.compare("v1", x, np.array([]))
    assert healthy.unit_change_features == () and healthy.unseen_category_features == ()

    unit = x.copy()
    unit[:, 19] *= 1000                                  # one feature arrives in another unit
    r = mon.compare("v1", unit, np.array([]))
    assert r.unit_change_features == ("px19",) and r.unseen_category_features == ()

    unseen = x.copy()
    rows = rng.random(400) < 0.3
    unseen[np.ix_(np.flatnonzero(rows), np.asarray(CENTRE))] = rng.integers(17, 65, (rows.sum(), len(CENTRE)))
    r = mon.compare("v1", unseen, np.array([]))
    assert set(r.unseen_category_features) >= {f"px{i}" for i in CENTRE[1:]} and r.unit_change_features == ()

    shifted = x.copy()
    rows = rng.random(400) < 0.6
    shifted[np.ix_(np.flatnonzero(rows), np.asarray(CENTRE))] += 7                   # new codes too, but the known ones moved: drift
    r = mon.compare("v1", shifted, np.array([]))
    assert r.detected and r.unseen_category_features == () and r.unit_change_features == ()

    # the first seconds of a fault: a few affected rows in a window of healthy ones
    for share in (0.1, 0.2, 0.4):
        early_shift, early_unseen = x.copy(), x.copy()
        rows = rng.random(400) < share
        early_shift[np.ix_(np.flatnonzero(rows), np.asarray(CENTRE))] += 7
        early_unseen[np.ix_(np.flatnonzero(rows), np.asarray(CENTRE))] = rng.integers(17, 65, (rows.sum(), len(CENTRE)))
        assert mon.compare("v1", early_shift, np.array([])).unseen_category_features == (), share
        assert mon.compare("v1", early_unseen, np.array([])).unseen_category_features != (), share
