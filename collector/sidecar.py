"""The sidecar loop: scrape the model server, keep bounded windows, compute signals, ship events.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> sc = Sidecar("http://127.0.0.1:8081", interval=1.0, gpu_source=SimulatedGPUSource(), registry=registry)
>>> snap = sc.run_once()              # one cycle, synchronously (tests)
>>> snap.up, snap.latency_quantiles
>>> sc.start(); ...; sc.stop()         # or a background thread
>>> generate_latest(registry)          # the signals, computed at scrape time from the latest snapshot
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from collector.drift_monitor import DriftMonitor, DriftResult
from collector.exposition import SidecarCollector
from collector.gpu import GPUReading, GPUSource, NoGPUSource
from collector.hardware import HostSampler, ProcessReading, ProcessSampler
from collector.scrape import ModelServerClient, ScrapeError
from collector.sinks import EventSink, EventType, NullSink, make_event
from collector.snapshot import PASSTHROUGH, SidecarSnapshot
from collector.windows import CounterRate, LabelJoin, PredictionWindow, WindowStats, error_ratio
from detectors.changes import RuntimeChangeKind, RuntimeObservation, runtime_changes
from detectors.errors import IncidentdError
from detectors.types import Sample

__all__ = ["PASSTHROUGH", "Sidecar", "SidecarConfig", "SidecarSnapshot"]

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything that tunes the sidecar; defaults suit a 10 s production interval."""

    model_name: str = "model"  # used until the server's model_info says otherwise
    window_rows: int = 2000  # recent predictions kept for quantiles, ratios and drift
    window_seconds: float = 120.0  # ... and their maximum age; also the counter-rate window
    accuracy_window: int = 500  # last N labeled predictions per version
    join_max_pending: int = 100_000  # predictions waiting for a label
    join_max_age_seconds: float = 3600.0
    drift_min_rows: int = 200  # below this no drift is computed (PSI is biased on few rows)
    drift_alpha: float = 0.01
    drift_psi_threshold: float = 0.2
    drift_tests: tuple[str, ...] = ("ks", "psi")
    drift_correction: str = "fdr_bh"
    prediction_psi_threshold: float = 0.25  # only for the drift-changed event
    page_limit: int = 1000
    max_pages: int = 20  # per log per cycle: bounded work per cycle
    timeout_seconds: float = 5.0
    seen_ids: int = 200_000  # request ids remembered to ignore re-read log rows
    # "auto": psutil on the pid from /healthz, else the server's own process_* metrics; "scrape": only the
    # latter (use it when the model server runs in another pid namespace, e.g. another container).
    process_source: str = "auto"
    # Filesystems whose free space is exported (model_disk_free_bytes{path}): where the server writes.
    disk_paths: tuple[str, ...] = ()


def _sum_samples(samples: list[Sample], name: str) -> float | None:
    vals = [s.value for s in samples if s.name == name and math.isfinite(s.value)]
    return sum(vals) if vals else None


class Sidecar:
    """Watches one model server; ``run_once()`` is one cycle, ``start()``/``stop()`` run it in a thread.

    The registry passed in gets one custom collector that computes the exposition from :meth:`snapshot`
    at scrape time; nothing global is touched.
    """

    def __init__(
        self,
        target_url: str,
        interval: float = 10.0,
        gpu_source: GPUSource | None = None,
        registry: CollectorRegistry | None = None,
        sink: EventSink | None = None,
        *,
        config: SidecarConfig | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target_url = target_url.rstrip("/")
        self.interval = float(interval)
        self.config = config or SidecarConfig()
        self.gpu_source: GPUSource = gpu_source or NoGPUSource()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sink: EventSink = sink or NullSink()
        self._clock = clock
        c = self.config
        self._client = ModelServerClient(self.target_url, timeout=c.timeout_seconds, client=client)
        self._window = PredictionWindow(c.window_rows, c.window_seconds)
        self._join = LabelJoin(
            max_pending=c.join_max_pending,
            max_age_seconds=c.join_max_age_seconds,
            accuracy_window=c.accuracy_window,
        )
        self._drift = DriftMonitor(
            tests=c.drift_tests,
            alpha=c.drift_alpha,
            correction=c.drift_correction,
            min_rows=c.drift_min_rows,
            psi_threshold=c.drift_psi_threshold,
        )
        self._requests_rate = CounterRate(c.window_seconds)
        self._errors_rate = CounterRate(c.window_seconds)
        self._proc_cpu_rate = CounterRate(max(3 * self.interval, 5.0))
        self._host = HostSampler(self.config.disk_paths)
        self._proc = ProcessSampler()
        self._seen_predictions: OrderedDict[str, None] = OrderedDict()
        self._seen_labels: OrderedDict[str, None] = OrderedDict()
        self._pred_cursor = 0
        self._label_cursor = 0
        self._model = c.model_name
        self._version: str | None = None
        self._pid: int | None = None
        self._up: bool | None = None
        self._drift_detected: bool | None = None
        self._pred_drift: bool | None = None
        self._drift_key: tuple[str, int, str] | None = None
        self._drift_cached: tuple[DriftResult | None, int] = (None, 0)
        self._gpu_flags: dict[str, tuple[bool | None, float | None, float | None]] = {}
        self._passthrough: tuple[Sample, ...] = ()
        self._scraped_rss: float | None = None
        self._scrapes = 0
        self._scrape_errors = 0
        self._sink_errors = 0
        self._last_error: str | None = None
        self._lock = threading.Lock()  # one cycle at a time
        self._snapshot: SidecarSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.collector = SidecarCollector(self.snapshot)
        self.registry.register(self.collector)

    # ---- public -------------------------------------------------------------------------------------
    def snapshot(self) -> SidecarSnapshot | None:
        """The latest computed signals (None before the first cycle)."""
        return self._snapshot

    def run_once(self) -> SidecarSnapshot:
        """One scrape cycle; never raises for an unreachable or misbehaving model server."""
        with self._lock:
            now = self._clock()
            events: list[dict[str, Any]] = []
            self._scrapes += 1
            try:
                self._scrape_model(now, events)
                up = True
            except ScrapeError as exc:
                up = False
                self._scrape_errors += 1
                self._last_error = str(exc)
                # Warn when the target goes down; while it stays down, once per cycle is only debug noise.
                log.log(
                    logging.WARNING if self._up is not False else logging.DEBUG,
                    "scrape of %s failed: %s",
                    self.target_url,
                    exc,
                    extra={"model": self._model, "target": self.target_url},
                )
            if up != self._up and self._up is not None:
                kind = EventType.SCRAPE_RECOVERED if up else EventType.SCRAPE_FAILED
                if up:
                    log.info("scrape of %s recovered", self.target_url, extra={"model": self._model})
                events.append(
                    self._event(kind, now, target=self.target_url, error=None if up else self._last_error)
                )
            elif not up and self._up is None:
                events.append(
                    self._event(EventType.SCRAPE_FAILED, now, target=self.target_url, error=self._last_error)
                )
            self._up = up
            snap = self._compute(now, up, events)
            self._snapshot = snap
            self._emit(events)
            return snap

    def start(self) -> None:
        """Run cycles every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="incidentd-sidecar", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        """Stop the loop and release the HTTP client, GPU source and sink."""
        self.stop()
        self._client.close()
        for closer in (self.gpu_source.close, self.sink.close):
            try:
                closer()
            except Exception:  # boundary: shutting down must finish
                log.exception("error while closing %s", closer)
        try:
            self.registry.unregister(self.collector)
        except KeyError:
            pass

    # ---- loop ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # boundary: one bad cycle must not kill the sidecar
                self._scrape_errors += 1
                log.exception("sidecar cycle failed", extra={"target": self.target_url})
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    # ---- scraping -----------------------------------------------------------------------------------
    def _scrape_model(self, now: float, events: list[dict[str, Any]]) -> None:
        health = self._client.healthz()
        samples = self._client.metrics(at=now)
        for s in samples:
            if s.name == "model_info" and s.value == 1:
                labels = dict(s.labels)
                self._model = labels.get("model") or self._model
                if health.version is None and labels.get("version"):
                    health = type(health)(health.status, labels["version"], health.pid)
        self._passthrough = tuple(s for s in samples if s.name in PASSTHROUGH)

        # Deploys and restarts are derived in one place (detectors.changes), the same one the service uses.
        before = RuntimeObservation(self._version, None if self._pid is None else str(self._pid))
        after = RuntimeObservation(health.version, None if health.pid is None else str(health.pid))
        for change in runtime_changes(before, after):
            if change.kind is RuntimeChangeKind.PROCESS:
                events.append(self._event(EventType.PROCESS_RESTART, now, previous_pid=self._pid, pid=health.pid))
                # A restarted server starts its in-memory logs again; re-read rows are skipped by request id.
                self._pred_cursor = self._label_cursor = 0
            else:
                events.append(
                    self._event(
                        EventType.VERSION_CHANGE, now, previous_version=change.previous, new_version=change.current
                    )
                )
        if health.pid is not None:
            self._pid = health.pid

        version = health.version
        if version is not None and version != self._version:
            self._version = version
            self._window.drop_other_versions(version)
            self._drift_detected = self._pred_drift = None

        for name, rate in (
            ("model_requests_total", self._requests_rate),
            ("model_request_errors_total", self._errors_rate),
            ("process_cpu_seconds_total", self._proc_cpu_rate),
        ):
            total = _sum_samples(samples, name)
            if total is not None:
                rate.add(now, total)
        self._scraped_rss = _sum_samples(samples, "process_resident_memory_bytes")

        predictions = self._read_log("predictions")
        fresh = [r for r in predictions if self._remember(self._seen_predictions, r.request_id)]
        self._join.add_predictions(fresh)
        self._window.extend(r for r in fresh if self._version is None or r.version == self._version)
        feedback = self._read_log("feedback")
        self._join.add_labels(lab for lab in feedback if self._remember(self._seen_labels, lab.request_id))

        if self._version is not None and not self._drift.has(self._version):
            self._fit_reference(self._version)

    def _remember(self, seen: OrderedDict[str, None], request_id: str) -> bool:
        if request_id in seen:
            return False
        seen[request_id] = None
        while len(seen) > self.config.seen_ids:
            seen.popitem(last=False)
        return True

    def _read_log(self, which: str) -> list[Any]:
        c = self.config
        fetch = self._client.predictions if which == "predictions" else self._client.feedback
        cursor = self._pred_cursor if which == "predictions" else self._label_cursor
        out: list[Any] = []
        restarted = False
        for _ in range(c.max_pages):
            page = fetch(after=cursor, limit=c.page_limit)
            if page.cursor < cursor and not restarted:
                # The log went backwards: the server restarted. Read it again from the start.
                restarted, cursor = True, 0
                continue
            out.extend(page.records)
            cursor = max(cursor, page.cursor)
            if len(page.records) < c.page_limit:
                break
        if which == "predictions":
            self._pred_cursor = cursor
        else:
            self._label_cursor = cursor
        return out

    def _fit_reference(self, version: str) -> None:
        try:
            ref = self._client.reference()
        except ScrapeError as exc:
            log.warning("reference of %s unavailable, drift skipped this cycle: %s", version, exc)
            return
        if ref.version != version:
            log.info("reference is for %s while healthz said %s; retrying next cycle", ref.version, version)
            return
        try:
            self._drift.fit(ref)
        except (IncidentdError, ValueError) as exc:
            log.warning("drift reference of %s could not be fitted: %s", version, exc)

    # ---- computing ----------------------------------------------------------------------------------
    def _compute(self, now: float, up: bool, events: list[dict[str, Any]]) -> SidecarSnapshot:
        version = self._version
        self._window.prune(now)
        self._join.prune(now)
        # While the model server cannot be read, nothing derived from its answers is current: latency,
        # throughput, error ratio, accuracy and drift are left out (absent, as Prometheus staleness has it)
        # rather than exported at their last values. The window is kept for when the server is back.
        stats = self._window.stats(version) if up else WindowStats(rows=0)

        throughput = self._requests_rate.rate() if up else None
        if throughput is None:
            throughput = stats.rows_per_second
        ratio = error_ratio(self._errors_rate, self._requests_rate) if up else None

        drift: DriftResult | None = None
        drift_rows = 0
        width = self._drift.width(version) if version is not None else None
        if up and version is not None and width is not None:
            records = self._window.records(version)
            key = (version, len(records), records[-1].request_id if records else "")
            if key == self._drift_key:  # nothing new in the window: the tests would say the same
                drift, drift_rows = self._drift_cached
            else:
                inputs = self._window.inputs(version, width)
                drift_rows = int(inputs.shape[0])
                try:
                    drift = self._drift.compare(version, inputs, self._window.predictions(version))
                except (IncidentdError, ValueError) as exc:
                    log.warning("drift comparison failed: %s", exc)
                self._drift_key, self._drift_cached = key, (drift, drift_rows)
        if drift is not None:
            if drift.detected != self._drift_detected:
                if self._drift_detected is not None or drift.detected:
                    events.append(
                        self._event(
                            EventType.DRIFT_CHANGED,
                            now,
                            detected=drift.detected,
                            drifted_features=list(drift.drifted_features),
                            rows=drift.rows,
                        )
                    )
                self._drift_detected = drift.detected
            if drift.prediction_psi is not None:
                pd = drift.prediction_psi >= self.config.prediction_psi_threshold
                if pd != self._pred_drift:
                    if self._pred_drift is not None or pd:
                        events.append(
                            self._event(
                                EventType.PREDICTION_DRIFT_CHANGED, now, detected=pd, psi=drift.prediction_psi
                            )
                        )
                    self._pred_drift = pd

        by_version = {v: self._join.accuracy(v) for v in self._join.versions()}
        accuracy = by_version.get(version) if version is not None and up else None
        lag = None if self._join.newest_label_ts is None else max(0.0, now - self._join.newest_label_ts)

        host = self._host.sample()
        process = None
        if self.config.process_source != "scrape" and self._pid is not None:
            process = self._proc.sample(self._pid)
        if process is None and up:
            process = self._process_from_scrape()
        gpus = self._read_gpus(now, events)

        return SidecarSnapshot(
            at=now,
            target=self.target_url,
            model=self._model,
            version=version,
            up=up,
            pid=self._pid,
            scrapes_total=self._scrapes,
            scrape_errors_total=self._scrape_errors,
            sink_errors_total=self._sink_errors,
            last_error=self._last_error,
            window=stats,
            throughput_rps=throughput,
            error_ratio=ratio,
            accuracy=accuracy,
            accuracy_by_version=by_version,
            label_lag_seconds=lag,
            drift=drift,
            drift_window_rows=drift_rows,
            passthrough=self._passthrough if up else (),
            host=host,
            process=process,
            gpus=gpus,
        )

    def _process_from_scrape(self) -> ProcessReading | None:
        """When the pid cannot be read (another container), fall back to the server's process metrics."""
        rss = self._scraped_rss
        rate = self._proc_cpu_rate.rate()
        if rss is None and rate is None:
            return None
        import psutil

        ncpu = psutil.cpu_count(logical=True) or 1
        return ProcessReading(
            pid=self._pid or 0,
            alive=True,
            cpu_usage_ratio=None if rate is None else min(max(rate / ncpu, 0.0), 1.0),
            resident_memory_bytes=rss,
        )

    def _read_gpus(self, now: float, events: list[dict[str, Any]]) -> tuple[GPUReading, ...]:
        try:
            gpus = tuple(self.gpu_source.read())
        except Exception:  # boundary: a driver problem must not stop the model signals
            log.warning("GPU source failed", exc_info=True)
            return ()
        for g in gpus:
            flags = (g.throttled, g.ecc_errors_total, g.xid_errors_total)
            prev = self._gpu_flags.get(g.gpu)
            if prev is not None and prev != flags:
                events.append(
                    self._event(
                        EventType.GPU_STATE_CHANGED,
                        now,
                        gpu=g.gpu,
                        throttled=g.throttled,
                        temperature_celsius=g.temperature_celsius,
                        ecc_errors_total=g.ecc_errors_total,
                        xid_errors_total=g.xid_errors_total,
                    )
                )
            self._gpu_flags[g.gpu] = flags
        return gpus

    # ---- events -------------------------------------------------------------------------------------
    def _event(self, kind: EventType, now: float, **fields: Any) -> dict[str, Any]:
        return make_event(kind, model=self._model, version=self._version, at=now, **fields)

    def _emit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        try:
            self.sink.emit(events)
        except Exception:  # boundary: shipping events must never stop the signals
            self._sink_errors += 1
            log.exception("event sink failed; %d events dropped", len(events))
