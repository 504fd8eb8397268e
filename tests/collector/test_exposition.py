"""The sidecar's /metrics: names and types from docs/contracts.md, HELP on every family, bounded labels."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.drift_monitor import DriftResult, FeatureDriftSignal
from collector.exposition import SidecarCollector
from collector.gpu import SimulatedGPUSource
from collector.hardware import HostReading, ProcessReading
from collector.sidecar import Sidecar
from collector.sinks import MemorySink
from collector.snapshot import SidecarSnapshot
from collector.windows import AccuracyStats, WindowStats
from detectors.types import Sample

ALLOWED_LABELS = {"model", "version", "quantile", "feature", "test", "gpu", "reason"}


def families(registry: CollectorRegistry) -> dict:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def full_snapshot() -> SidecarSnapshot:
    mv = (("model", "digits"), ("version", "v1"))
    return SidecarSnapshot(
        at=1000.0,
        target="http://x",
        model="digits",
        version="v1",
        up=True,
        pid=42,
        scrapes_total=7,
        scrape_errors_total=2,
        sink_errors_total=0,
        last_error=None,
        window=WindowStats(
            rows=500,
            latency_quantiles={0.5: 0.002, 0.9: 0.004, 0.99: 0.009},
            nonfinite_ratio=0.0,
            input_missing_ratio=0.02,
            rows_per_second=50.0,
        ),
        throughput_rps=12.5,
        error_ratio=0.02,
        accuracy=AccuracyStats(labeled_total=300, correct_total=290, window=300, accuracy_ratio=290 / 300),
        accuracy_by_version={
            "v1": AccuracyStats(300, 290, 300, 290 / 300),
            "v0": AccuracyStats(10, 5, 10, 0.5),
        },
        label_lag_seconds=3.5,
        drift=DriftResult(
            version="v1",
            rows=500,
            features=(
                FeatureDriftSignal("pixel_0", "ks", 0.0, 1.0, False),
                FeatureDriftSignal("pixel_0", "psi", 0.0, None, False),
                FeatureDriftSignal("pixel_3", "ks", 0.4, 1e-9, True),
                FeatureDriftSignal("pixel_3", "psi", 0.9, None, True),
            ),
            drifted_features=("pixel_3",),
            detected=True,
            prediction_psi=0.05,
        ),
        drift_window_rows=500,
        passthrough=(
            Sample("model_requests_total", mv, 0, 120.0),
            Sample("model_request_errors_total", (*mv, ("reason", "invalid_input")), 0, 3.0),
            Sample("model_nonfinite_outputs_total", mv, 0, 0.0),
            Sample("model_weights_nonfinite", mv, 0, 0.0),
            Sample("model_weights_abs_max", mv, 0, 1.5),
            Sample("model_requests_in_flight", mv, 0, 3.0),
            Sample("model_oldest_request_age_seconds", mv, 0, 41.5),
        ),
        host=HostReading(0.25, 0.5),
        process=ProcessReading(pid=42, alive=True, cpu_usage_ratio=0.1, resident_memory_bytes=2e8),
        gpus=tuple(SimulatedGPUSource(count=2).read()),
    )


EXPECTED = {  # family name (as the parser reports it) -> type
    "model_up": "gauge",
    "model_latency_seconds": "gauge",
    "model_throughput_requests_per_second": "gauge",
    "model_requests": "counter",
    "model_request_errors": "counter",
    "model_error_ratio": "gauge",
    "model_predictions_labeled": "counter",
    "model_predictions_correct": "counter",
    "model_accuracy_ratio": "gauge",
    "model_label_lag_seconds": "gauge",
    "model_feature_drift_statistic": "gauge",
    "model_feature_drift_p_value": "gauge",
    "model_drifted_features": "gauge",
    "model_input_drift_detected": "gauge",
    "model_unit_change_features": "gauge",
    "model_unseen_category_features": "gauge",
    "model_prediction_drift_statistic": "gauge",
    "model_nonfinite_outputs": "counter",
    "model_nonfinite_output_ratio": "gauge",
    "model_input_missing_ratio": "gauge",
    "model_weights_nonfinite": "gauge",
    "model_weights_abs_max": "gauge",
    "model_requests_in_flight": "gauge",
    "model_oldest_request_age_seconds": "gauge",
    "model_host_cpu_usage_ratio": "gauge",
    "model_host_memory_usage_ratio": "gauge",
    "model_process_cpu_usage_ratio": "gauge",
    "model_process_resident_memory_bytes": "gauge",
    "model_gpu_utilization_ratio": "gauge",
    "model_gpu_memory_used_bytes": "gauge",
    "model_gpu_temperature_celsius": "gauge",
    "model_gpu_throttled": "gauge",
    "model_gpu_ecc_errors": "counter",
    "model_gpu_xid_errors": "counter",
    "incidentd_sidecar_scrapes": "counter",
    "incidentd_sidecar_scrape_errors": "counter",
}


def test_contract_names_types_help_and_labels() -> None:
    registry = CollectorRegistry()
    snap = full_snapshot()
    registry.register(SidecarCollector(lambda: snap))
    fams = families(registry)
    for name, kind in EXPECTED.items():
        assert name in fams, name
        assert fams[name].type == kind, name
    for f in fams.values():
        assert f.documentation, f"{f.name} has no HELP"
        for s in f.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (f.name, s.labels)
            if f.name.startswith("model_"):
                assert s.labels.get("model") == "digits", f.name
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    mv = (("model", "digits"), ("version", "v1"))
    assert values[("model_latency_seconds", tuple(sorted((*mv, ("quantile", "0.99")))))] == 0.009
    assert (
        values[
            ("model_feature_drift_statistic", tuple(sorted((*mv, ("feature", "pixel_3"), ("test", "psi")))))
        ]
        == 0.9
    )
    assert (
        "model_feature_drift_p_value",
        tuple(sorted((*mv, ("feature", "pixel_3"), ("test", "psi")))),
    ) not in values  # p-values for KS only
    assert values[("model_input_drift_detected", mv)] == 1.0
    assert values[("model_drifted_features", mv)] == 1.0
    assert values[("model_requests_total", mv)] == 120.0
    assert values[("model_request_errors_total", tuple(sorted((*mv, ("reason", "invalid_input")))))] == 3.0
    assert values[("model_predictions_labeled_total", (("model", "digits"), ("version", "v0")))] == 10
    assert values[("model_gpu_temperature_celsius", tuple(sorted((*mv, ("gpu", "1")))))] == 55.0
    assert values[("incidentd_sidecar_scrape_errors_total", ())] == 2


def test_before_first_cycle_only_own_health() -> None:
    registry = CollectorRegistry()
    registry.register(SidecarCollector(lambda: None))
    assert set(families(registry)) == {
        "incidentd_sidecar_scrapes",
        "incidentd_sidecar_scrape_errors",
        "incidentd_sidecar_event_sink_errors",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_model_server_keeps_serving() -> None:
    registry, sink = CollectorRegistry(), MemorySink()
    sc = Sidecar(
        f"http://127.0.0.1:{free_port()}",
        interval=0.05,
        gpu_source=SimulatedGPUSource(),
        registry=registry,
        sink=sink,
    )
    try:
        for _ in range(3):
            snap = sc.run_once()
        assert not snap.up and snap.scrape_errors_total == 3 and snap.scrapes_total == 3
        fams = families(registry)
        assert [s.value for s in fams["model_up"].samples] == [0.0]
        assert fams["incidentd_sidecar_scrape_errors"].samples[0].value == 3
        assert "model_host_cpu_usage_ratio" in fams and "model_gpu_temperature_celsius" in fams
        assert "model_latency_seconds" not in fams
        assert [e["event_type"] for e in sink.events] == ["scrape_failed"]  # once, on the transition
    finally:
        sc.close()
