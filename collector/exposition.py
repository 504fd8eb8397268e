"""The sidecar's /metrics: a custom collector builds every family from the latest snapshot at scrape time.

Names follow docs/contracts.md; labels are bounded (model, version, feature, test, quantile, gpu).

    >>> registry = CollectorRegistry()
    >>> registry.register(SidecarCollector(sidecar.snapshot))
    >>> generate_latest(registry)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.drift_monitor import SCALE_FACTOR
from collector.snapshot import PASSTHROUGH, SidecarSnapshot

MV = ["model", "version"]

HELP: dict[str, str] = {
    "model_requests_total": "Requests served by the model server (passed through from its /metrics).",
    "model_request_errors_total": "Predict requests that failed, by reason (passed through).",
    "model_nonfinite_outputs_total": "Model outputs that were NaN or infinite (passed through).",
    "model_weights_nonfinite": "Non-finite values in the loaded model weights (passed through).",
    "model_weights_abs_max": "Largest absolute value in the loaded model weights (passed through).",
    "model_requests_in_flight": "Predict requests being answered now (passed through).",
    "model_oldest_request_age_seconds": "Age of the oldest predict request still in flight, 0 when none "
                                        "(passed through).",
}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class SidecarCollector(Collector):
    """Computes the exposition from ``snapshot()`` on every collect(); holds no metric state of its own."""

    def __init__(self, snapshot: Callable[[], SidecarSnapshot | None]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # names vary with the snapshot; skip registry duplicate checks

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        scrapes = CounterMetricFamily(
            "incidentd_sidecar_scrapes_total", "Scrape cycles the sidecar ran against the model server."
        )
        errors = CounterMetricFamily(
            "incidentd_sidecar_scrape_errors_total",
            "Scrape cycles that failed (model server down, timeout, bad payload).",
        )
        sink_errors = CounterMetricFamily(
            "incidentd_sidecar_event_sink_errors_total", "Event batches the configured sink failed to ship."
        )
        scrapes.add_metric([], snap.scrapes_total if snap else 0)
        errors.add_metric([], snap.scrape_errors_total if snap else 0)
        sink_errors.add_metric([], snap.sink_errors_total if snap else 0)
        yield scrapes
        yield errors
        yield sink_errors
        if snap is None:
            return
        yield from _model_families(snap)


def _model_families(snap: SidecarSnapshot) -> Iterator[Metric]:
    mv = [snap.model, snap.version or ""]

    def gauge(
        name: str,
        doc: str,
        value: float | None,
        labels: list[str] | None = None,
        extra: list[str] | None = None,
    ) -> Iterator[Metric]:
        if not _finite(value):
            return
        g = GaugeMetricFamily(name, doc, labels=MV + (labels or []))
        g.add_metric(mv + (extra or []), float(value))  # type: ignore[arg-type]
        yield g

    up = GaugeMetricFamily(
        "model_up", "1 when the last scrape of the model server succeeded, else 0.", labels=MV
    )
    up.add_metric(mv, 1.0 if snap.up else 0.0)
    yield up
    if snap.pid is not None:
        # Which process serves (pid from /healthz): a new value is a restart (detectors.changes).
        yield from gauge("model_process_id", "Process id of the model server; a new value means it restarted.",
                         float(snap.pid))

    w = snap.window
    if w.latency_quantiles:
        lat = GaugeMetricFamily(
            "model_latency_seconds",
            "Request latency quantiles over the recent prediction window.",
            labels=MV + ["quantile"],
            unit="seconds",
        )
        for q, v in sorted(w.latency_quantiles.items()):
            if _finite(v):
                lat.add_metric(mv + [f"{q:g}"], v)
        yield lat
    yield from gauge(
        "model_throughput_requests_per_second",
        "Requests per second over the recent window.",
        snap.throughput_rps,
    )
    yield from gauge(
        "model_error_ratio", "Errors divided by requests over the recent window.", snap.error_ratio
    )
    yield from gauge(
        "model_nonfinite_output_ratio",
        "Share of predictions with a NaN or infinite output in the recent window.",
        w.nonfinite_ratio,
    )
    yield from gauge(
        "model_input_missing_ratio",
        "Share of input values that were null in the recent window.",
        w.input_missing_ratio,
    )
    yield from gauge(
        "model_window_predictions", "Predictions of the running version in the recent window.",
        float(w.rows) if snap.up else None,   # unknown, not 0, while the model server cannot be read
    )

    # Passed-through series keep the model server's labels (model, version, reason).
    by_name: dict[str, list] = {}
    for s in snap.passthrough:
        by_name.setdefault(s.name, []).append(s)
    for name, samples in sorted(by_name.items()):
        kind = PASSTHROUGH[name]
        label_names = sorted({k for s in samples for k, _ in s.labels})
        fam: Metric
        if kind == "counter":
            fam = CounterMetricFamily(name, HELP[name], labels=label_names)
        else:
            fam = GaugeMetricFamily(name, HELP[name], labels=label_names)
        for s in samples:
            sample_labels = dict(s.labels)
            fam.add_metric([sample_labels.get(k, "") for k in label_names], s.value)
        yield fam

    # Accuracy from delayed labels, per version (bounded to the last few versions).
    labeled = CounterMetricFamily(
        "model_predictions_labeled_total",
        "Predictions that received a delayed label (joined by request id).",
        labels=MV,
    )
    correct = CounterMetricFamily(
        "model_predictions_correct_total", "Labeled predictions whose output matched the label.", labels=MV
    )
    for version, acc in sorted(snap.accuracy_by_version.items()):
        labeled.add_metric([snap.model, version], acc.labeled_total)
        correct.add_metric([snap.model, version], acc.correct_total)
    if snap.accuracy_by_version:
        yield labeled
        yield correct
    if snap.accuracy is not None:
        yield from gauge(
            "model_accuracy_ratio",
            "Accuracy over the last N labeled predictions of the running version.",
            snap.accuracy.accuracy_ratio,
        )
        yield from gauge(
            "model_accuracy_window_labels",
            "Labeled predictions in the accuracy window.",
            float(snap.accuracy.window),
        )
    yield from gauge("model_label_lag_seconds", "Age of the newest label received.", snap.label_lag_seconds)

    # Drift against the running version's reference set; only with enough complete rows.
    yield from gauge(
        "model_drift_window_rows",
        "Complete input rows of the running version available for "
        "drift tests (drift is computed at the minimum configured rows or more).",
        float(snap.drift_window_rows) if snap.up else None,
    )
    d = snap.drift
    if d is not None:
        stat = GaugeMetricFamily(
            "model_feature_drift_statistic",
            "Per-feature drift statistic of the recent window against the reference "
            "(ks: KS distance, psi: population stability index).",
            labels=MV + ["feature", "test"],
        )
        pval = GaugeMetricFamily(
            "model_feature_drift_p_value",
            "Per-feature KS p-value (uncorrected).",
            labels=MV + ["feature", "test"],
        )
        for f in d.features:
            stat.add_metric(mv + [f.feature, f.test], f.statistic)
            if f.p_value is not None:
                pval.add_metric(mv + [f.feature, f.test], f.p_value)
        yield stat
        yield pval
        yield from gauge(
            "model_drifted_features",
            "Features drifting after Benjamini-Hochberg correction.",
            float(len(d.drifted_features)),
        )
        yield from gauge(
            "model_unit_change_features",
            f"Features arriving in another unit: at least 5% of values >= {SCALE_FACTOR:g}x the reference's "
            "largest magnitude.",
            float(len(d.unit_change_features)),
        )
        yield from gauge(
            "model_unseen_category_features",
            "Code-like features carrying codes the reference never had (at least 5% of values) while the "
            "known codes keep their mix.",
            float(len(d.unseen_category_features)),
        )
        yield from gauge(
            "model_input_drift_detected",
            "1 when the dataset-level input drift test fires, else 0.",
            1.0 if d.detected else 0.0,
        )
        if _finite(d.prediction_psi):
            pd = GaugeMetricFamily(
                "model_prediction_drift_statistic",
                "Drift of the predicted-class distribution against the reference predictions.",
                labels=MV + ["test"],
            )
            pd.add_metric(mv + ["psi"], d.prediction_psi)  # type: ignore[arg-type]
            yield pd

    # Hardware.
    if snap.host is not None:
        yield from gauge("model_host_cpu_usage_ratio", "Host CPU usage (0..1).", snap.host.cpu_usage_ratio)
        yield from gauge(
            "model_host_memory_usage_ratio", "Host memory in use (0..1).", snap.host.memory_usage_ratio
        )
    if snap.process is not None:
        yield from gauge(
            "model_process_up",
            "1 when the model-server process (pid from /healthz) is alive.",
            1.0 if snap.process.alive else 0.0,
        )
        yield from gauge(
            "model_process_cpu_usage_ratio",
            "CPU used by the model-server process as a share of all host CPUs (0..1).",
            snap.process.cpu_usage_ratio,
        )
        yield from gauge(
            "model_process_resident_memory_bytes",
            "Resident memory of the model-server process.",
            snap.process.resident_memory_bytes,
        )
        # issue 18: the limit the RSS runs into, for the leak forecast (source: cgroup or host)
        yield from gauge(
            "model_process_memory_limit_bytes",
            "The most the model-server process's resident memory can reach now: its cgroup memory limit "
            "less the rest of the cgroup's usage, else its RSS plus the host's available memory.",
            snap.process.memory_limit_bytes,
            ["source"],
            [snap.process.memory_limit_source or "unknown"],
        )
    if snap.host is not None and snap.host.disks:
        free = GaugeMetricFamily("model_disk_free_bytes", "Free bytes of the filesystem where the model server "
                                 "writes (psutil.disk_usage).", labels=MV + ["path"])
        total = GaugeMetricFamily("model_disk_total_bytes", "Size of the filesystem where the model server writes.",
                                  labels=MV + ["path"])
        for disk in snap.host.disks:
            free.add_metric(mv + [disk.path], disk.free_bytes)
            total.add_metric(mv + [disk.path], disk.total_bytes)
        yield free
        yield total
    if snap.gpus:
        yield from _gpu_families(snap, mv)


def _gpu_families(snap: SidecarSnapshot, mv: list[str]) -> Iterator[Metric]:
    labels = MV + ["gpu"]
    spec = (
        ("model_gpu_utilization_ratio", "GPU utilization (0..1).", "utilization_ratio", GaugeMetricFamily),
        ("model_gpu_memory_used_bytes", "GPU memory in use.", "memory_used_bytes", GaugeMetricFamily),
        ("model_gpu_memory_total_bytes", "GPU memory in total.", "memory_total_bytes", GaugeMetricFamily),
        ("model_gpu_temperature_celsius", "GPU core temperature.", "temperature_celsius", GaugeMetricFamily),
        (
            "model_gpu_throttled",
            "1 when the GPU clocks are throttled (thermal, power, hardware slowdown).",
            "throttled",
            GaugeMetricFamily,
        ),
        (
            "model_gpu_ecc_errors_total",
            "Uncorrected (volatile) ECC errors.",
            "ecc_errors_total",
            CounterMetricFamily,
        ),
        (
            "model_gpu_xid_errors_total",
            "Critical Xid events seen by the sidecar.",
            "xid_errors_total",
            CounterMetricFamily,
        ),
    )
    for name, doc, attr, cls in spec:
        fam = cls(name, doc, labels=labels)
        any_value = False
        for g in snap.gpus:
            value = getattr(g, attr)
            if value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                fam.add_metric(mv + [g.gpu], value)
                any_value = True
        if any_value:
            yield fam
