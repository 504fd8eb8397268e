"""Signal specs turn metric series into evidence: they must fire on real faults and stay quiet otherwise."""
from __future__ import annotations

import numpy as np

from diagnosis.signals import CounterIncreaseSpec, GaugeThresholdSpec, LevelSpec, ProportionSpec, SignalState
from incidentd.tsdb import EmbeddedStore


def feed(store: EmbeddedStore, t: float, lines: list[str]) -> None:
    store.ingest_text("\n".join(lines) + "\n", at=t)


def run(spec, store, model, times):
    out = []
    for t in times:
        out.append(spec.observe(store, model, t, 1.0))
    return out


def test_accuracy_drop_after_bad_deploy_is_detected_and_recovery_is_verified():
    store = EmbeddedStore(retention_seconds=3600, max_points=5000)
    spec = ProportionSpec("accuracy", "model_predictions_correct_total", "model_predictions_labeled_total",
                          direction="drop", window_seconds=15, margin=0.05, min_count=30)
    rng = np.random.default_rng(0)
    labeled = correct = 0
    readings = {}
    for t in range(1, 121):
        acc = 0.96 if t < 60 or t >= 90 else 0.10        # bad version between t=60 and t=90
        n = 40
        labeled += n
        correct += int(rng.binomial(n, acc))
        feed(store, t, [f'model_predictions_labeled_total{{model="m",version="v1"}} {labeled}',
                        f'model_predictions_correct_total{{model="m",version="v1"}} {correct}'])
        if t % 2 == 0:
            readings[t] = spec.observe(store, "m", t, 1.0)
    assert not any(r.active for t, r in readings.items() if r and t < 60), "false alarm while healthy"
    first = min(t for t, r in readings.items() if r and r.active)
    assert 60 <= first <= 64, f"accuracy drop detected late: t={first}"
    assert spec.recovered(store, "m", since=62, now=70) is False
    assert spec.recovered(store, "m", since=92, now=100) is True
    assert not readings[120].active


def test_counter_increase_flags_nonfinite_outputs_and_resets_are_not_increases():
    store = EmbeddedStore()
    spec = CounterIncreaseSpec("nonfinite_outputs", "model_nonfinite_outputs_total", window_seconds=5)
    values = [0, 0, 0, 4, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0]      # a restart resets the counter to 0
    states = []
    for t, v in enumerate(values, start=1):
        feed(store, t, [f'model_nonfinite_outputs_total{{model="m",version="v1"}} {v}'])
        states.append(spec.observe(store, "m", t, 1.0).active)
    assert states[:3] == [False, False, False]
    assert states[3] and states[4]
    assert not states[-1]
    assert spec.recovered(store, "m", since=6, now=14) is True
    assert spec.recovered(store, "m", since=2, now=7) is False, "still counting right after the fix"


def test_level_signal_needs_a_real_effect_not_just_a_tiny_mad():
    store = EmbeddedStore()
    spec = LevelSpec("latency", "model_latency_seconds", {"quantile": "0.99"}, min_ratio=3.0, min_delta=0.05,
                     confirm=3, clear=3)
    rng = np.random.default_rng(1)
    active = {}
    for t in range(1, 121):
        base = 0.004 + rng.normal(0, 0.0005)
        v = base * (1.4 if 40 <= t < 60 else 1.0)            # 40% slower: statistically odd, harmless
        v = 0.3 if 80 <= t < 100 else v                      # starvation: 75x slower
        feed(store, t, [f'model_latency_seconds{{model="m",version="v1",quantile="0.99"}} {v}'])
        active[t] = spec.observe(store, "m", t, 1.0).active
    assert not any(active[t] for t in range(1, 80))
    assert any(active[t] for t in range(80, 86))
    assert not active[110]
    assert spec.recovered(store, "m", since=100, now=110) is True


def test_threshold_signal_confirms_and_ignores_stale_series():
    store = EmbeddedStore()
    spec = GaugeThresholdSpec("input_drift", "model_drifted_features", op="gt", threshold=0, confirm=2, clear=2,
                              stale_seconds=5)
    seq = [0, 0, 3, 0, 4, 5, 6, 0, 0, 0]
    act = []
    for t, v in enumerate(seq, start=1):
        feed(store, t, [f'model_drifted_features{{model="m",version="v1"}} {v}'])
        act.append(spec.observe(store, "m", t, 1.0).active)
    assert act[2] is False, "a single blip must not count"
    assert act[5] is True and act[6] is True
    assert act[-1] is False
    stopped = spec.observe(store, "m", 30.0, 1.0)
    assert stopped.state is SignalState.NO_DATA and not stopped.active, "a series that stopped is no evidence"


def test_a_counter_that_stopped_arriving_is_no_data_and_never_recovered():
    store = EmbeddedStore()
    spec = CounterIncreaseSpec("nonfinite_outputs", "model_nonfinite_outputs_total", window_seconds=5,
                               quiet_seconds=3, stale_seconds=5)
    for t, v in enumerate([0, 0, 4, 9, 9], start=1):
        feed(store, t, [f'model_nonfinite_outputs_total{{model="m"}} {v}'])
        spec.observe(store, "m", t, 1.0)
    # The sidecar dies right after the fix at t=5: no sample says the counter stayed flat.
    assert spec.recovered(store, "m", since=5.0, now=20.0) is None
    assert spec.observe(store, "m", 20.0, 1.0).state is SignalState.NO_DATA
    for t in range(21, 26):               # it is back, and the counter did not move
        feed(store, t, ['model_nonfinite_outputs_total{model="m"} 9'])
        spec.observe(store, "m", t, 1.0)
    assert spec.recovered(store, "m", since=20.0, now=25.0) is True


def test_a_failed_metrics_target_turns_every_other_reading_into_no_data():
    from diagnosis.signals import MONITORING_SIGNAL, SignalReading, SignalState, blind_while_monitoring_down

    down = SignalReading(MONITORING_SIGNAL, "m", 10.0, True, 1.0, 0.0, 5.0, "up = 0", "threshold")
    healthy = SignalReading("accuracy", "m", 10.0, False, 0.0, 0.97, None, "0.97", "rate")
    out = blind_while_monitoring_down({MONITORING_SIGNAL: down, "accuracy": healthy})
    assert out[MONITORING_SIGNAL] is down
    assert out["accuracy"].state is SignalState.NO_DATA and "does not answer" in out["accuracy"].summary
    up = SignalReading(MONITORING_SIGNAL, "m", 10.0, False, 0.0, 1.0, None, "up = 1", "threshold")
    assert blind_while_monitoring_down({MONITORING_SIGNAL: up, "accuracy": healthy})["accuracy"] is healthy
