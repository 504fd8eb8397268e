"""One suite over every registered detector (see shared STYLE.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import detectors.rates
import detectors.univariate  # noqa: F401
from detectors.base import REGISTRY, Detector
from detectors.types import DetectorState

NAMES = sorted(REGISTRY)
# A step change must be flagged within this many points of its onset.
DETECTION_DELAY = 60


def _stationary(cls: type[Detector], n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cls.input_kind == "binary":
        return (rng.random(n) < 0.05).astype(float)
    return 10.0 + rng.normal(size=n)


def _step(cls: type[Detector], n: int = 1500, at: int = 1000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cls.input_kind == "binary":
        p = np.where(np.arange(n) < at, 0.05, 0.5)
        return (rng.random(n) < p).astype(float)
    x = 10.0 + rng.normal(size=n)
    x[at:] += 8.0
    return x


@pytest.mark.parametrize("name", NAMES)
def test_fresh_clone_equals_new_instance(name: str) -> None:
    cls = REGISTRY[name]
    d = cls()
    d.score_batch(_stationary(cls, 500))
    c = d.clone()
    fresh = cls()
    x = _stationary(cls, 300, seed=5)
    assert np.array_equal(c.score_batch(x), fresh.score_batch(x))
    assert c.params() == fresh.params()


@pytest.mark.parametrize("name", NAMES)
def test_reset_restores_fresh_behaviour(name: str) -> None:
    cls = REGISTRY[name]
    d = cls()
    d.score_batch(_step(cls))
    d.reset()
    x = _stationary(cls, 400, seed=3)
    assert np.array_equal(d.score_batch(x), cls().score_batch(x))
    d.reset()
    assert d.state is DetectorState.WARMUP


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trips_through_json(name: str) -> None:
    cls = REGISTRY[name]
    d = cls()
    x = _step(cls)
    for v in x[:1100]:
        d.update(float(v))
    cp = json.loads(json.dumps(d.checkpoint()))
    assert set(cp["state"]) == set(cls.state_keys)
    r = Detector.restore(cp)
    assert type(r) is cls and r.params() == d.params()
    assert (r.score, r.state, r.direction) == (d.score, d.state, d.direction)
    rest = [float(v) for v in x[1100:]]
    assert [r.update(v) for v in rest] == [d.update(v) for v in rest]


@pytest.mark.parametrize("name", NAMES)
def test_stationary_stream_stays_quiet(name: str) -> None:
    cls = REGISTRY[name]
    d = cls()
    s = d.score_batch(_stationary(cls, 5000, seed=11))
    assert np.all((s >= 0) & (s <= 1))
    assert np.mean(s >= cls.alarm_threshold) <= 0.01


@pytest.mark.parametrize("name", NAMES)
def test_step_change_is_caught(name: str) -> None:
    cls = REGISTRY[name]
    d = cls()
    s = d.score_batch(_step(cls))
    hits = np.flatnonzero(s[1000:] >= cls.alarm_threshold)
    assert len(hits) and hits[0] <= DETECTION_DELAY, f"first alarm {hits[:1]} points after the step"


@pytest.mark.parametrize("name", NAMES)
def test_streaming_equals_batch(name: str) -> None:
    cls = REGISTRY[name]
    x = _step(cls)
    x = x.copy()
    x[[50, 700, 1200]] = np.nan
    a, b = cls(), cls()
    streamed = np.array([a.update(float(v)) for v in x])
    batched = np.concatenate([b.score_batch(x[:600]), b.score_batch(x[600:])])
    np.testing.assert_allclose(batched, streamed, rtol=1e-9, atol=1e-12)
    assert (a.state, a.direction) == (b.state, b.direction)
    assert a.checkpoint()["state"].keys() == b.checkpoint()["state"].keys()
    # the states after both paths continue identically
    tail = _stationary(cls, 200, seed=9)
    np.testing.assert_allclose(b.score_batch(tail), [a.update(float(v)) for v in tail], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_are_reported_not_raised(name: str) -> None:
    cls = REGISTRY[name]
    d = cls()
    ref = cls()
    x = _stationary(cls, 400)
    for v in x[:300]:
        d.update(float(v))
        ref.update(float(v))
    for bad in (float("nan"), float("inf"), float("-inf")):
        assert d.update(bad) == 0.0
        assert d.state is DetectorState.INVALID_INPUT
    # the bad points left the learned state untouched
    assert [d.update(float(v)) for v in x[300:]] == [ref.update(float(v)) for v in x[300:]]
