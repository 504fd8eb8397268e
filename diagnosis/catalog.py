"""The default signal catalog: which metric, detector and guards make each signal of the vocabulary."""
from __future__ import annotations

from dataclasses import dataclass, field

from diagnosis.forecast import ExhaustionSpec
from diagnosis.relative import RelativeLevelSpec
from diagnosis.signals import CounterIncreaseSpec, GaugeThresholdSpec, LevelSpec, ProportionSpec, SignalSpec
from diagnosis.vocabulary import SIGNALS


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    """Knobs that differ between a production cadence and the demo's fast mode."""

    accuracy_window_seconds: float = 120.0
    error_window_seconds: float = 60.0
    counter_window_seconds: float = 60.0
    label_stall_seconds: float = 300.0
    request_stall_seconds: float = 30.0   # no healthy answer takes this long; a hung one never ends
    latency_quantile: str = "0.9"   # p90: a starved server is slow for everyone; p99 over a short
    # window is owned by a handful of requests and jumps on every deploy or GC pause
    confirm_points: int = 2
    # Relative thresholds (issue 18): a latency episode needs latency_ratio x the model's own baseline (or
    # its SLO) for latency_sustain_seconds; latency_floor_seconds is an optional absolute floor on top.
    latency_ratio: float = 3.0
    latency_floor_seconds: float = 0.0
    latency_sustain_seconds: float = 0.0
    process_cpu_ratio: float = 2.5
    process_cpu_floor_ratio: float = 0.0     # share of all host CPUs (the former fixed gate was 0.1)
    process_memory_ratio: float = 1.5
    process_memory_floor_bytes: float = 0.0
    # Slow faults: growth is judged over trend_window_seconds; a forecast exhaustion within
    # exhaustion_horizon_seconds opens the signal; action is due exhaustion_lead_seconds before it.
    trend_window_seconds: float = 1800.0
    exhaustion_horizon_seconds: float = 86_400.0
    exhaustion_lead_seconds: float = 1800.0
    disk_horizon_seconds: float = 86_400.0
    # Per model (from settings ``models.<name>``): latency SLO (p90, seconds) and a configured memory limit.
    latency_slo_seconds: dict[str, float] = field(default_factory=dict)
    memory_limit_bytes: dict[str, float] = field(default_factory=dict)


def default_catalog(cfg: CatalogSettings | None = None) -> list[SignalSpec]:
    cfg = cfg or CatalogSettings()
    c = cfg.confirm_points
    specs: list[SignalSpec] = [
        RelativeLevelSpec("latency", "model_latency_seconds", {"quantile": cfg.latency_quantile},
                          min_ratio=cfg.latency_ratio, min_delta=cfg.latency_floor_seconds,
                          slos=cfg.latency_slo_seconds, sustain_seconds=cfg.latency_sustain_seconds,
                          confirm=c + 1, clear=3, unit="s"),
        ProportionSpec("error_rate", "model_request_errors_total", "model_requests_total", direction="rise",
                       window_seconds=cfg.error_window_seconds, margin=0.02, min_count=50,
                       what="error ratio"),
        ProportionSpec("accuracy", "model_predictions_correct_total", "model_predictions_labeled_total",
                       direction="drop", window_seconds=cfg.accuracy_window_seconds, margin=0.05,
                       min_count=30, what="accuracy"),
        CounterIncreaseSpec("nonfinite_outputs", "model_nonfinite_outputs_total",
                            window_seconds=cfg.counter_window_seconds, what="non-finite outputs"),
        GaugeThresholdSpec("weights_nonfinite", "model_weights_nonfinite", op="gt", threshold=0,
                           describe="{value} non-finite weight values"),
        LevelSpec("weights_exploding", "model_weights_abs_max", min_ratio=10.0, min_delta=1.0, confirm=1,
                  detector_params={"window": 60, "z_alarm": 4.0, "direction": "up", "min_periods": 5}),
        GaugeThresholdSpec("input_drift", "model_drifted_features", op="gt", threshold=0, confirm=c,
                           clear=3, describe="{value} features drift (KS/PSI, Benjamini-Hochberg corrected)"),
        GaugeThresholdSpec("unit_change", "model_unit_change_features", op="gt", threshold=0, confirm=c,
                           clear=3, describe="{value} feature(s) arrive at >= 10x the reference's magnitude"),
        # Two points more than the others: in the first seconds of a shift its rows are a small part of the
        # sidecar's window and look like new codes; by then the moved known codes give the shift away.
        GaugeThresholdSpec("unseen_categories", "model_unseen_category_features", op="gt", threshold=0,
                           confirm=c + 2, clear=3, describe="{value} feature(s) carry codes never seen in the "
                                                        "reference"),
        GaugeThresholdSpec("prediction_drift", "model_prediction_drift_statistic", {"test": "psi"},
                           op="gt", threshold=0.25, confirm=c, clear=3,
                           describe="PSI of predicted classes {value} (threshold {threshold})"),
        GaugeThresholdSpec("missing_inputs", "model_input_missing_ratio", op="gt", threshold=0.05,
                           confirm=c, describe="{value} of input features are null"),
        GaugeThresholdSpec("label_stall", "model_label_lag_seconds", op="gt",
                           threshold=cfg.label_stall_seconds, confirm=c,
                           describe="newest label is {value}s old (threshold {threshold}s)"),
        # The ratio is of all host CPUs: one saturated core is 0.5 on 2 CPUs, 0.06 on 16.
        LevelSpec("process_cpu", "model_process_cpu_usage_ratio", min_ratio=cfg.process_cpu_ratio,
                  min_delta=cfg.process_cpu_floor_ratio, confirm=c, clear=3),
        LevelSpec("process_memory", "model_process_resident_memory_bytes", min_ratio=cfg.process_memory_ratio,
                  min_delta=cfg.process_memory_floor_bytes, confirm=c, clear=3, unit="B"),
        ExhaustionSpec("memory_leak", "model_process_resident_memory_bytes", "model_process_memory_limit_bytes",
                       window_seconds=cfg.trend_window_seconds, horizon_seconds=cfg.exhaustion_horizon_seconds,
                       lead_seconds=cfg.exhaustion_lead_seconds, limits=cfg.memory_limit_bytes,
                       what="resident memory", per_process=True),
        ExhaustionSpec("gpu_memory_leak", "model_gpu_memory_used_bytes", "model_gpu_memory_total_bytes",
                       window_seconds=cfg.trend_window_seconds, horizon_seconds=cfg.exhaustion_horizon_seconds,
                       lead_seconds=cfg.exhaustion_lead_seconds, what="GPU memory", limit_name="GPU total",
                       per_process=True),
        ExhaustionSpec("disk_fill", "model_disk_free_bytes", "model_disk_total_bytes", free=True,
                       window_seconds=cfg.trend_window_seconds, horizon_seconds=cfg.disk_horizon_seconds,
                       lead_seconds=cfg.exhaustion_lead_seconds, what="disk used", limit_name="filesystem size"),
        GaugeThresholdSpec("host_cpu", "model_host_cpu_usage_ratio", op="gt", threshold=0.97,
                           confirm=c * 5, clear=3, describe="host CPU at {value}"),
        GaugeThresholdSpec("host_memory", "model_host_memory_usage_ratio", op="gt", threshold=0.95,
                           confirm=c, describe="host memory at {value}"),
        GaugeThresholdSpec("target_down", "model_up", op="lt", threshold=1, confirm=c + 1, clear=2,
                           describe="model_up = {value}"),
        # The sidecar (or any scrape target of the model) fails: `up` as Prometheus writes it, or the
        # embedded scraper's own `up`. Two failed scrapes in a row, so it shows within two cycles.
        GaugeThresholdSpec("monitoring_down", "up", op="lt", threshold=1, confirm=2, clear=2,
                           describe="up = {value}: the metrics target does not answer"),
        GaugeThresholdSpec("request_stall", "model_oldest_request_age_seconds", op="gt",
                           threshold=cfg.request_stall_seconds, confirm=c,
                           describe="oldest predict request in flight for {value}s (threshold {threshold}s)"),
        GaugeThresholdSpec("gpu_thermal", "model_gpu_throttled", op="gt", threshold=0, confirm=c,
                           describe="throttle flag {value}"),
        CounterIncreaseSpec("gpu_errors", "model_gpu_ecc_errors_total",
                            window_seconds=cfg.counter_window_seconds, what="ECC errors"),
    ]
    unknown = {s.name for s in specs} - set(SIGNALS)
    assert not unknown, f"catalog names signals outside the vocabulary: {unknown}"
    return specs
