"""Bounded windows, label join and counter rates: pure computations on constructed records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collector.windows import (
    CounterRate,
    LabelJoin,
    LabelRecord,
    PredictionRecord,
    PredictionWindow,
    error_ratio,
    latency_quantiles,
    window_stats,
)


def rec(
    i: int,
    ts: float,
    version: str = "v1",
    pred: int | None = 1,
    latency: float = 0.01,
    inputs: list[float | None] | None = None,
    finite: bool = True,
    error: str | None = None,
) -> PredictionRecord:
    return PredictionRecord.from_json(
        {
            "request_id": f"r{i}",
            "ts": ts,
            "version": version,
            "inputs": inputs if inputs is not None else [1.0, 2.0],
            "prediction": pred,
            "finite": finite,
            "latency_seconds": latency,
            "error": error,
        }
    )


def test_latency_quantiles_match_numpy_and_ignore_nonfinite() -> None:
    lat = np.linspace(0.001, 0.1, 1000)
    q = latency_quantiles(list(lat) + [math.nan, math.inf])
    assert q.keys() == {0.5, 0.9, 0.99}
    assert q[0.5] == pytest.approx(np.quantile(lat, 0.5))
    assert q[0.99] == pytest.approx(np.quantile(lat, 0.99))
    assert latency_quantiles([]) == {}


def test_window_is_bounded_by_count_and_age() -> None:
    w = PredictionWindow(max_rows=100, max_age_seconds=10)
    w.extend(rec(i, ts=float(i) / 10) for i in range(500))  # ts 0 .. 49.9
    assert len(w) == 100
    w.prune(now=50.0)  # keeps ts >= 40
    assert len(w) == 100
    w.prune(now=55.0)  # keeps ts >= 45
    assert len(w) == 50
    w.prune(now=1000.0)
    assert len(w) == 0


def test_window_stats_ratios() -> None:
    rows = [rec(i, ts=i, latency=0.01 * (i + 1)) for i in range(8)]
    rows.append(rec(8, ts=8, pred=None, finite=False, error="nonfinite_output"))
    rows.append(rec(9, ts=9, inputs=[None, 1.0]))
    s = window_stats(rows)
    assert s.rows == 10
    assert s.nonfinite_ratio == pytest.approx(0.1)
    assert s.input_missing_ratio == pytest.approx(1 / 20)
    assert s.rows_per_second == pytest.approx(10 / 9)
    assert 0 < s.latency_quantiles[0.5] <= s.latency_quantiles[0.9] <= s.latency_quantiles[0.99]
    assert window_stats([]).rows == 0 and window_stats([]).nonfinite_ratio is None


def test_error_ratio_is_the_ratio_of_counter_increases() -> None:
    requests, errors = CounterRate(60.0), CounterRate(60.0)
    assert error_ratio(errors, requests) is None          # one point: no increase yet (missing, not 0)
    requests.add(0.0, 100.0)
    errors.add(0.0, 7.0)
    requests.add(10.0, 100.0)
    errors.add(10.0, 7.0)
    assert error_ratio(errors, requests) is None          # no request in the window: missing, not healthy
    requests.add(20.0, 300.0)
    errors.add(20.0, 57.0)
    assert error_ratio(errors, requests) == pytest.approx(50 / 200)
    requests.add(30.0, 10.0)                              # the server restarted: counters reset
    errors.add(30.0, 0.0)
    assert error_ratio(errors, requests) is None


def test_version_change_drops_old_rows() -> None:
    w = PredictionWindow(max_rows=1000, max_age_seconds=1e9)
    w.extend(rec(i, ts=i, version="v1", latency=1.0) for i in range(50))
    w.extend(rec(100 + i, ts=50 + i, version="v2", latency=0.001) for i in range(20))
    assert w.stats("v2").rows == 20
    assert w.stats("v2").latency_quantiles[0.99] == pytest.approx(0.001)
    w.drop_other_versions("v2")
    assert len(w) == 20 and {r.version for r in w.records()} == {"v2"}
    assert w.inputs("v2", 2).shape == (20, 2)
    assert w.inputs("v2", 3).shape == (0, 3)


def test_label_join_with_delayed_and_partial_labels() -> None:
    j = LabelJoin(accuracy_window=100)
    preds = [rec(i, ts=i, pred=i % 3) for i in range(10)]
    j.add_predictions(preds)
    assert j.accuracy("v1").accuracy_ratio is None  # no labels yet
    # only half the labels arrive, 4 right and 1 wrong
    labels = [LabelRecord(f"r{i}", i % 3, ts=100.0 + i) for i in range(4)] + [LabelRecord("r4", 2, ts=104.0)]
    assert j.add_labels(labels) == 5
    acc = j.accuracy("v1")
    assert (acc.labeled_total, acc.correct_total, acc.window) == (5, 4, 5)
    assert acc.accuracy_ratio == pytest.approx(0.8)
    assert j.newest_label_ts == 104.0
    assert len(j) == 5  # still waiting for labels
    # a repeated label for an already-joined id is not counted twice
    assert j.add_labels([LabelRecord("r0", 0, ts=105.0)]) == 0
    assert j.accuracy("v1").labeled_total == 5


def test_label_before_prediction_is_joined_later() -> None:
    j = LabelJoin()
    assert j.add_labels([LabelRecord("r1", 1, ts=5.0)]) == 0
    j.add_predictions([rec(1, ts=4.0, pred=1)])
    assert j.accuracy("v1").correct_total == 1


def test_nonfinite_prediction_counts_as_wrong_and_versions_are_separate() -> None:
    j = LabelJoin(accuracy_window=3)
    j.add_predictions(
        [rec(1, ts=1, pred=None, finite=False, error="nonfinite_output"), rec(2, ts=2, version="v2", pred=4)]
    )
    j.add_labels([LabelRecord("r1", 1, 3.0), LabelRecord("r2", 4, 3.0)])
    assert j.accuracy("v1").accuracy_ratio == 0.0
    assert j.accuracy("v2").accuracy_ratio == 1.0
    # the accuracy window keeps only the last N labeled predictions
    j.add_predictions([rec(10 + i, ts=10 + i, version="v2", pred=0) for i in range(3)])
    j.add_labels([LabelRecord(f"r{10 + i}", 1, 20.0) for i in range(3)])
    acc = j.accuracy("v2")
    assert acc.window == 3 and acc.accuracy_ratio == 0.0 and acc.labeled_total == 4


def test_join_table_is_bounded() -> None:
    j = LabelJoin(max_pending=100, max_age_seconds=50)
    j.add_predictions(rec(i, ts=i) for i in range(1000))
    assert len(j) == 100 and j.evicted == 900
    j.prune(now=1049.0)  # keeps ts >= 999
    assert len(j) == 1


def test_counter_rate_window_and_reset() -> None:
    r = CounterRate(window_seconds=10)
    assert r.rate() is None
    for t in range(21):
        r.add(float(t), 5.0 * t)
    assert r.rate() == pytest.approx(5.0)
    assert r.increase() == pytest.approx(50.0)
    r.add(21.0, 3.0)  # server restarted: counter went down
    assert r.rate() is None
    r.add(22.0, 8.0)
    assert r.rate() == pytest.approx(5.0)
