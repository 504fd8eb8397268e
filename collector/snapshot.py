"""The typed result of one sidecar cycle: what the sidecar loop produces and /metrics reads.

The sidecar (:mod:`collector.sidecar`) builds one :class:`SidecarSnapshot` per cycle; the exposition
(:mod:`collector.exposition`) only reads snapshots. Neither imports the other's module for this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.drift_monitor import DriftResult
from collector.gpu import GPUReading
from collector.hardware import HostReading, ProcessReading
from collector.windows import AccuracyStats, WindowStats
from detectors.types import Sample

# Series of the model server passed through unchanged (name of the sample -> Prometheus type).
PASSTHROUGH: dict[str, str] = {
    "model_requests_total": "counter",
    "model_request_errors_total": "counter",
    "model_nonfinite_outputs_total": "counter",
    "model_weights_nonfinite": "gauge",
    "model_weights_abs_max": "gauge",
    "model_requests_in_flight": "gauge",
    "model_oldest_request_age_seconds": "gauge",
}


@dataclass(frozen=True, slots=True)
class SidecarSnapshot:
    """The signals computed by the latest cycle; what /metrics exposes."""

    at: float
    target: str
    model: str
    version: str | None
    up: bool
    pid: int | None
    scrapes_total: int
    scrape_errors_total: int
    sink_errors_total: int
    last_error: str | None
    window: WindowStats
    throughput_rps: float | None
    error_ratio: float | None
    accuracy: AccuracyStats | None  # current version
    accuracy_by_version: dict[str, AccuracyStats]  # bounded: the last few versions
    label_lag_seconds: float | None
    drift: DriftResult | None  # None: no reference yet or too few rows
    drift_window_rows: int
    passthrough: tuple[Sample, ...]
    host: HostReading | None
    process: ProcessReading | None
    gpus: tuple[GPUReading, ...] = field(default_factory=tuple)

    @property
    def latency_quantiles(self) -> dict[float, float]:
        return self.window.latency_quantiles

    @property
    def accuracy_ratio(self) -> float | None:
        return None if self.accuracy is None else self.accuracy.accuracy_ratio
