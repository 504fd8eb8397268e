"""Model-server instrumentation: contract metric names, labels, ring-buffer cursors, scrape-time weights."""
from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector.instrumentation import (
    ErrorReason,
    ModelInstrumentation,
    PredictionRecord,
    RingLog,
    WeightStats,
)


def _rec(rid: str, finite: bool = True) -> PredictionRecord:
    return PredictionRecord(rid, time.time(), "v1", [0.0, None], 1 if finite else None, finite, 0.003)


def test_contract_metrics_and_labels() -> None:
    reg = CollectorRegistry()
    stats = {"value": WeightStats(0, 0.5)}
    inst = ModelInstrumentation(reg, "digits", "v1", weight_stats=lambda: stats["value"])
    fresh = generate_latest(reg).decode()          # every series exists at 0 before the first event
    assert 'model_requests_total{model="digits",version="v1"} 0.0' in fresh
    assert 'model_request_errors_total{model="digits",reason="internal",version="v1"} 0.0' in fresh
    inst.record_request(0.004, [_rec("a"), _rec("b", finite=False)])
    inst.record_error(ErrorReason.INVALID_INPUT)
    text = generate_latest(reg).decode()
    lb = 'model="digits",version="v1"'
    assert f'model_request_duration_seconds_bucket{{le="0.005",{lb}}} 1.0' in text
    assert f"model_requests_total{{{lb}}} 2.0" in text
    assert f'model_request_errors_total{{{lb[:15]}reason="invalid_input",{lb[15:]}}} 1.0' in text
    assert f'model_request_errors_total{{{lb[:15]}reason="nonfinite_output",{lb[15:]}}} 1.0' in text
    assert f"model_nonfinite_outputs_total{{{lb}}} 1.0" in text
    assert f"model_info{{{lb}}} 1.0" in text
    assert f"model_weights_nonfinite{{{lb}}} 0.0" in text
    assert f"model_weights_abs_max{{{lb}}} 0.5" in text
    # computed at scrape time
    stats["value"] = WeightStats(7, 2.0)
    inst.set_version("v2")
    text = generate_latest(reg).decode()
    assert 'model_weights_nonfinite{model="digits",version="v2"} 7.0' in text
    assert 'model_info{model="digits",version="v2"} 1.0' in text
    assert 'model_info{model="digits",version="v1"}' not in text


def test_registry_is_not_global() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ModelInstrumentation(a, "m", "v1")
    ModelInstrumentation(b, "m", "v1")          # would raise "Duplicated timeseries" on a shared registry


def test_latency_buckets_cover_ms_to_seconds() -> None:
    from collector.instrumentation import LATENCY_BUCKETS

    assert LATENCY_BUCKETS[0] <= 0.001 and LATENCY_BUCKETS[-1] >= 5.0


def test_ring_log_cursor() -> None:
    log: RingLog[int] = RingLog(5)
    assert log.page(0).cursor == 0 and log.page(0).records == ()
    log.extend(range(1, 4))                    # cursors 1..3
    p = log.page(0, limit=2)
    assert p.records == (1, 2) and p.cursor == 2
    p = log.page(p.cursor)
    assert p.records == (3,) and p.cursor == 3
    assert log.page(3).records == () and log.page(3).cursor == 3
    log.extend(range(4, 10))                   # 9 written, only the newest 5 kept
    p = log.page(0, limit=100)
    assert p.records == (5, 6, 7, 8, 9) and p.cursor == 9
    assert log.page(7).records == (8, 9)
    # a cursor from a previous process (ahead of this log) restarts from the oldest record
    assert log.page(1_000).records == (5, 6, 7, 8, 9)
    with pytest.raises(ValueError):
        RingLog(0)


def test_prediction_and_feedback_logs() -> None:
    inst = ModelInstrumentation(CollectorRegistry(), "digits", "v1", prediction_log_size=2)
    inst.record_request(0.01, [_rec("a"), _rec("b"), _rec("c")])
    assert not inst.known_request("a") and inst.known_request("c")     # bounded like the log
    page = inst.predictions(0, 10)
    assert [r.request_id for r in page.records] == ["b", "c"] and page.cursor == 3
    assert page.records[0].as_dict()["inputs"] == [0.0, None]
    assert inst.record_feedback([("c", 4)]) == 1
    fb = inst.feedback(0)
    assert fb.cursor == 1 and fb.records[0].label == 4 and fb.records[0].request_id == "c"
