"""The sidecar for a third-party model server (MLServer, Triton, KServe, TorchServe, BentoML, vLLM, TGI).

It is the same :class:`~collector.sidecar.Sidecar` cycle with three sources swapped:

* metrics: the server's own Prometheus endpoint read through a metric map (collector/adapters/maps);
* predictions: request/response pairs from the transparent proxy or the CloudEvents sink, decoded here,
  off the request path;
* labels: ``POST /feedback`` on the sidecar, joined by request id; references: files per model version.

The sidecar's /metrics keeps the canonical names of docs/contracts.md; :class:`AdapterCollector` adds the
signals only some servers give (queue, time to first token, KV cache, ...) and the reference/feedback
bookkeeping.

    >>> sc = ServerSidecar("http://127.0.0.1:8080", server=ServerOptions(kind="mlserver",
    ...                    metrics_url="http://127.0.0.1:8082/metrics", maps=builtin_maps()))
    >>> sc.capture.put(exchange); sc.inbox.post(labels); sc.run_once()
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.adapters import (
    MapError,
    MetricMap,
    ReadingWindow,
    Signal,
    choose_kind,
    extract,
    parse_families,
)
from collector.adapters.engine import SERVER_WIDE, ModelKey, ServerReading
from collector.adapters.payloads import Exchange, PayloadError, decode, route
from collector.capture import CaptureBuffer
from collector.cloudevents import CloudEventSink
from collector.feedback import FeedbackInbox, LabelBook
from collector.gpu import GPUReading, GPUSource
from collector.reference_files import (
    ReferenceError,
    ReferenceFiles,
    feature_names_from_metadata,
    fetch_metadata,
)
from collector.scrape import ScrapeError
from collector.sidecar import Sidecar, SidecarConfig
from collector.sinks import EventSink, EventType
from collector.windows import PredictionRecord
from detectors.errors import IncidentdError
from detectors.types import Sample

log = logging.getLogger(__name__)
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    kind: str  # a map's kind, or "auto"
    maps: dict[str, MetricMap]
    metrics_url: str | None = None  # None: derived from the target and the map's default port
    reference_dir: Path | None = None
    reference_per_model: dict[str, Path] = field(default_factory=dict)
    label_max_age_seconds: float = 3600.0
    label_max_pending: int = 100_000
    capture_max_items: int = 10_000
    capture_max_bytes: int = 64 << 20


def default_metrics_url(target: str, m: MetricMap) -> str:
    """The server's Prometheus endpoint: the target's host on the map's metrics port, else the target."""
    parts = urlsplit(target.rstrip("/"))
    netloc = parts.netloc
    if m.metrics_port is not None and parts.hostname:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{m.metrics_port}"
    return urlunsplit((parts.scheme, netloc, m.metrics_path, "", ""))


@dataclass(frozen=True, slots=True)
class AdapterState:
    kind: str
    model: str
    version: str
    latency_mean_seconds: float | None = None
    queue_latency_mean_seconds: float | None = None
    queued: float | None = None
    kv_cache_usage: float | None = None
    time_to_first_token: dict[float, float] = field(default_factory=dict)
    inter_token_latency: dict[float, float] = field(default_factory=dict)
    reference_missing: bool | None = None
    feedback_received_total: int = 0
    feedback_unmatched_total: int = 0
    feedback_pending: int = 0
    payloads_captured_total: int = 0
    payloads_dropped_total: int = 0
    payload_decode_errors_total: int = 0
    payload_buffer_peak_bytes: int = 0
    cloudevents_total: int = 0
    cloudevents_unpaired_total: int = 0
    cloudevent_pairs_by_endpoint: dict[str, int] = field(default_factory=dict)


class ServerSidecar(Sidecar):
    """Watches a third-party model server through its metric map, the proxy/CloudEvents and /feedback."""

    def __init__(
        self,
        target_url: str,
        interval: float = 10.0,
        gpu_source: GPUSource | None = None,
        registry: CollectorRegistry | None = None,
        sink: EventSink | None = None,
        *,
        server: ServerOptions,
        config: SidecarConfig | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(target_url, interval, gpu_source, registry, sink, config=config, client=client, clock=clock)
        self.server = server
        c = self.config
        if server.kind != AUTO and server.kind not in server.maps:
            raise MapError(f"--server-kind {server.kind!r}: no such map (known: {', '.join(sorted(server.maps))})")
        self._map: MetricMap | None = server.maps.get(server.kind)
        self.metrics_url = server.metrics_url or (
            default_metrics_url(self.target_url, self._map) if self._map else None
        )
        self._http = client or httpx.Client(timeout=c.timeout_seconds)
        self._owns_http = client is None
        self.capture = CaptureBuffer(server.capture_max_items, server.capture_max_bytes)
        self.cloudevents = CloudEventSink(self.capture, clock=clock)
        self.inbox = FeedbackInbox()
        self._book = LabelBook(server.label_max_pending, server.label_max_age_seconds)
        self._readings = ReadingWindow(c.window_seconds)
        self._files = ReferenceFiles(server.reference_dir, server.reference_per_model)
        self._feature_names: dict[str, tuple[str, ...] | None] = {}
        self._ref_missing: bool | None = None
        self._ref_logged: set[tuple[str, str]] = set()
        self._proxy_counts: dict[str, list[int]] = {}  # model -> [requests, errors] seen by proxy/events
        self._last_totals: dict[str, float] = {}         # version -> the server's request total at the last scrape
        self._decode_errors = 0
        self._model_pinned = c.model_name != SidecarConfig().model_name
        self._adapter = AdapterState(kind=server.kind, model=self._model, version="")
        self.adapter_collector = AdapterCollector(self.adapter_state)
        self.registry.register(self.adapter_collector)

    @property
    def kind(self) -> str:
        return self._map.kind if self._map is not None else AUTO

    def adapter_state(self) -> AdapterState:
        return self._adapter

    def close(self) -> None:
        super().close()
        if self._owns_http:
            self._http.close()
        try:
            self.registry.unregister(self.adapter_collector)
        except KeyError:
            pass

    # ---- scraping (replaces the base class's /healthz + prediction-log reading) ----------------------
    def _metrics_text(self) -> str:
        url = self.metrics_url or f"{self.target_url}/metrics"
        try:
            r = self._http.get(url)
        except httpx.HTTPError as exc:
            raise ScrapeError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise ScrapeError(f"GET {url}: HTTP {r.status_code}")
        return r.text

    def _scrape_model(self, now: float, events: list[dict[str, Any]]) -> None:
        try:
            families = parse_families(self._metrics_text())
        except ValueError as exc:
            raise ScrapeError(f"unparsable exposition at {self.metrics_url}: {exc}") from exc
        if self._map is None:
            try:
                det = choose_kind(families, self.server.maps)
            except MapError as exc:
                raise ScrapeError(str(exc)) from exc
            self._map = self.server.maps[det.kind]
            log.info("server kind auto-detected: %s (matched %s)", det.kind, ", ".join(det.matched))
        reading = extract(self._map, families, now)
        self._readings.add(reading)

        decoded = self._drain_payloads()
        self._choose_model(reading, decoded)
        key = self._key(reading, decoded)
        version = key[1]
        if version != self._version:
            if self._version is not None:
                events.append(
                    self._event(EventType.VERSION_CHANGE, now, previous_version=self._version, new_version=version)
                )
            self._version = version
            self._window.drop_other_versions(version)
            self._drift_detected = self._pred_drift = None
            self._ref_missing = None

        req, err = self._request_counts(key)
        for total, rate in ((req, self._requests_rate), (err, self._errors_rate)):
            if total is not None:
                rate.add(now, total)
        cpu = reading.process.get(Signal.PROCESS_CPU_SECONDS)
        if cpu is not None:
            self._proc_cpu_rate.add(now, cpu)
        self._scraped_rss = reading.process.get(Signal.PROCESS_RESIDENT_MEMORY)
        self._passthrough = self._canonical_samples(key, req, err, now)

        fresh = [
            r if r.version else replace(r, version=version)
            for r in decoded
            if self._remember(self._seen_predictions, r.request_id)
        ]
        self._join.add_predictions(fresh)
        self._window.extend(r for r in fresh if r.version == version)
        for lab in self.inbox.drain():
            if lab.request_id in self._seen_predictions:
                self._join.add_labels([lab])
            else:
                self._book.offer(lab)
        self._join.add_labels(self._book.take(r.request_id for r in fresh))
        self._book.expire(now)

        if not self._drift.has(version):
            width = next((int(r.inputs.shape[0]) for r in reversed(fresh) if r.inputs.size), None)
            self._fit_from_files(version, width)

    def _drain_payloads(self) -> list[PredictionRecord]:
        out: list[PredictionRecord] = []
        for ex in self.capture.drain():
            model = self._count_exchange(ex)
            try:
                d = decode(ex)
            except PayloadError as exc:
                self._decode_errors += 1
                log.debug("payload %s not decoded: %s", ex.request_id, exc)
                continue
            out.extend(r for r in d.records if (d.model or model) in ("", self._model) or not self._model_pinned)
            if not self._model_pinned and d.model and self._model != d.model and not self._seen_model_metrics():
                self._model = d.model
        return out

    def _count_exchange(self, ex: Exchange) -> str:
        r = route(ex.path)
        model = ex.model or (r.model if r else "")
        counts = self._proxy_counts.setdefault(model, [0, 0])
        counts[0] += 1
        counts[1] += int(not 200 <= ex.status < 300)
        return model

    def _seen_model_metrics(self) -> bool:
        newest = self._readings.newest
        return newest is not None and any(k != SERVER_WIDE for k in newest.models)

    def _choose_model(self, reading: ServerReading, records: list[PredictionRecord]) -> None:
        if self._model_pinned:
            return
        named = [k for k in reading.model_keys() if k != SERVER_WIDE]
        if named and self._model not in {k[0] for k in named}:
            self._model = named[0][0]
            log.info("watching model %s (from the server's metrics)", self._model)

    def _key(self, reading: ServerReading, records: list[PredictionRecord]) -> ModelKey:
        versions = [k[1] for k in reading.model_keys() if k[0] == self._model]
        if versions and any(versions):
            # Several versions live at once (TorchServe and Triton keep the old one registered): the one
            # serving now is the one with the most requests since the last scrape, not the most ever.
            totals = {v: reading.models[(self._model, v)].counters.get(Signal.REQUESTS, 0.0) for v in versions}
            recent = {v: t - self._last_totals.get(v, 0.0) for v, t in totals.items()}
            self._last_totals = totals
            if max(recent.values()) > 0:
                return self._model, max(versions, key=lambda v: (recent[v], totals[v]))
            current = self._version if self._version in totals else None
            return self._model, current or max(versions, key=lambda v: totals[v])
        # The metrics carry no version (MLServer writes "None", KServe has no label): the payloads say.
        newest = next((r.version for r in reversed(records) if r.version), None)
        return self._model, newest if newest is not None else (self._version or "")

    def _request_counts(self, key: ModelKey) -> tuple[float | None, float | None]:
        """The server's own counters; when its map has no error counter, both from the proxy/events."""
        assert self._map is not None
        proxy = self._proxy_counts.get(key[0]) or self._proxy_counts.get("")
        if Signal.ERRORS not in self._map.signals and proxy is not None:
            return float(proxy[0]), float(proxy[1])
        return self._readings.latest(key, Signal.REQUESTS), self._readings.latest(key, Signal.ERRORS)

    def _canonical_samples(
        self, key: ModelKey, req: float | None, err: float | None, now: float
    ) -> tuple[Sample, ...]:
        labels = (("model", key[0]), ("version", key[1]))
        out = []
        for name, value in (
            ("model_requests_total", req),
            ("model_request_errors_total", err),
            ("model_requests_in_flight", self._readings.latest(key, Signal.IN_FLIGHT)),
        ):
            if value is not None and math.isfinite(value):
                out.append(Sample(name=name, labels=labels, timestamp=now, value=float(value)))
        return tuple(out)

    def _fit_from_files(self, version: str, width: int | None) -> None:
        model = self._model
        if model not in self._feature_names:
            meta = fetch_metadata(self._http, self.target_url, model)
            self._feature_names[model] = feature_names_from_metadata(meta) if meta else None
        names = self._feature_names[model]
        try:
            ref = self._files.load(model, version, names)
        except ReferenceError as exc:
            if (model, version) not in self._ref_logged:
                log.warning("drift reference of %s %s unusable: %s", model, version or "(no version)", exc)
                self._ref_logged.add((model, version))
            self._ref_missing = True
            return
        if ref is None:
            if (model, version) not in self._ref_logged:
                log.warning(
                    "no drift reference for %s %s (looked for %s/<version>|default.parquet|.csv)",
                    model,
                    version or "(no version)",
                    self.server.reference_dir / model if self.server.reference_dir else "no --reference",
                )
                self._ref_logged.add((model, version))
            self._ref_missing = True
            return
        if width is not None and ref.inputs.shape[1] != width:
            log.warning("reference of %s %s has %d features, requests have %d", model, version, ref.inputs.shape[1], width)
        try:
            self._drift.fit(ref)
            self._ref_missing = False
            log.info("drift reference of %s %s: %d rows", model, version or "(no version)", ref.inputs.shape[0])
        except (IncidentdError, ValueError) as exc:
            log.warning("drift reference of %s %s could not be fitted: %s", model, version, exc)
            self._ref_missing = True

    def _fit_reference(self, version: str) -> None:  # the base class's GET /reference: not for these servers
        self._fit_from_files(version, None)

    # ---- computing ----------------------------------------------------------------------------------
    def _compute(self, now: float, up: bool, events: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
        snap = super()._compute(now, up, events)
        key: ModelKey = (self._model, self._version or "")
        r = self._readings
        q = r.quantiles(key, Signal.LATENCY) if up else {}
        if q:  # the server's own histogram/summary wins over the proxy's timing
            snap = replace(snap, window=replace(snap.window, latency_quantiles=q))
        ce = self.cloudevents
        self._adapter = AdapterState(
            kind=self.kind,
            model=self._model,
            version=self._version or "",
            latency_mean_seconds=r.mean(key, Signal.LATENCY) if up else None,
            queue_latency_mean_seconds=r.mean(key, Signal.QUEUE_LATENCY) if up else None,
            queued=r.latest(key, Signal.QUEUED) if up else None,
            kv_cache_usage=r.latest(key, Signal.KV_CACHE_USAGE) if up else None,
            time_to_first_token=r.quantiles(key, Signal.TIME_TO_FIRST_TOKEN) if up else {},
            inter_token_latency=r.quantiles(key, Signal.INTER_TOKEN_LATENCY) if up else {},
            reference_missing=self._ref_missing,
            feedback_received_total=self.inbox.received_total,
            feedback_unmatched_total=self._book.unmatched_total,
            feedback_pending=len(self._book),
            payloads_captured_total=self.capture.accepted_total,
            payloads_dropped_total=self.capture.dropped_total,
            payload_decode_errors_total=self._decode_errors,
            payload_buffer_peak_bytes=self.capture.peak_bytes,
            cloudevents_total=ce.events_total,
            cloudevents_unpaired_total=ce.unpaired_total,
            cloudevent_pairs_by_endpoint=dict(ce.pairs_by_endpoint),
        )
        return snap

    def _read_gpus(self, now: float, events: list[dict[str, Any]]) -> tuple[GPUReading, ...]:
        own = super()._read_gpus(now, events)
        newest = self._readings.newest
        if own or newest is None or not newest.gpus:
            return own
        return tuple(
            GPUReading(
                gpu=gpu,
                utilization_ratio=g.get(Signal.GPU_UTILIZATION),
                memory_used_bytes=g.get(Signal.GPU_MEMORY_USED),
                memory_total_bytes=g.get(Signal.GPU_MEMORY_TOTAL),
            )
            for gpu, g in sorted(newest.gpus.items())
        )


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class AdapterCollector(Collector):
    """The signals only some server kinds give, plus the payload/feedback/reference bookkeeping."""

    def __init__(self, state: Callable[[], AdapterState]) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self._state()
        mv = [s.model, s.version]
        info = GaugeMetricFamily("incidentd_sidecar_server_info", "The kind of model server watched.", labels=["kind"])
        info.add_metric([s.kind], 1.0)
        yield info

        def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
            if _finite(value):
                g = GaugeMetricFamily(name, doc, labels=["model", "version"])
                g.add_metric(mv, float(value))  # type: ignore[arg-type]
                yield g

        def quantiles(name: str, doc: str, qs: dict[float, float]) -> Iterator[Metric]:
            if qs:
                g = GaugeMetricFamily(name, doc, labels=["model", "version", "quantile"])
                for q, v in sorted(qs.items()):
                    g.add_metric(mv + [f"{q:g}"], v)
                yield g

        def counter(name: str, doc: str, value: int, labels: bool = False) -> Metric:
            c = CounterMetricFamily(name, doc, labels=["model", "version"] if labels else [])
            c.add_metric(mv if labels else [], value)
            return c

        yield from gauge(
            "model_latency_mean_seconds",
            "Mean request latency over the recent window, from the server's own counters.",
            s.latency_mean_seconds,
        )
        yield from gauge(
            "model_queue_latency_mean_seconds",
            "Mean time requests waited in the server's queue over the recent window.",
            s.queue_latency_mean_seconds,
        )
        yield from gauge("model_requests_queued", "Requests waiting in the server's queue.", s.queued)
        yield from gauge("model_kv_cache_usage_ratio", "KV-cache blocks in use (0..1).", s.kv_cache_usage)
        yield from quantiles(
            "model_time_to_first_token_seconds", "Time to first token quantiles over the recent window.",
            s.time_to_first_token,
        )
        yield from quantiles(
            "model_inter_token_latency_seconds", "Inter-token latency quantiles over the recent window.",
            s.inter_token_latency,
        )
        if s.reference_missing is not None:
            yield from gauge(
                "model_drift_reference_missing",
                "1 when the running version has no usable drift reference (no file, or it does not fit).",
                1.0 if s.reference_missing else 0.0,
            )
        yield counter(
            "model_feedback_labels_received_total", "Labels posted to the sidecar's /feedback.", s.feedback_received_total, True
        )
        yield counter(
            "model_feedback_unmatched_total",
            "Labels whose request id never matched a recorded prediction in time.",
            s.feedback_unmatched_total,
            True,
        )
        yield from gauge("model_feedback_pending_labels", "Labels waiting for their prediction.", float(s.feedback_pending))
        yield counter(
            "incidentd_sidecar_payloads_captured_total", "Request/response pairs captured (proxy or CloudEvents).",
            s.payloads_captured_total,
        )
        yield counter(
            "incidentd_sidecar_payloads_dropped_total",
            "Pairs dropped because the capture buffer was full or a body too large.",
            s.payloads_dropped_total,
        )
        yield counter(
            "incidentd_sidecar_payload_decode_errors_total", "Captured pairs that could not be decoded.",
            s.payload_decode_errors_total,
        )
        peak = GaugeMetricFamily(
            "incidentd_sidecar_payload_buffer_peak_bytes",
            "Largest size the capture buffer reached (bounded by its byte limit).",
        )
        peak.add_metric([], float(s.payload_buffer_peak_bytes))
        yield peak
        yield counter("incidentd_sidecar_cloudevents_total", "CloudEvents received.", s.cloudevents_total)
        if s.cloudevent_pairs_by_endpoint:
            pairs = CounterMetricFamily(
                "model_cloudevent_pairs_total",
                "Request/response pairs from the payload logger, by ce-endpoint (default, canary).",
                labels=["model", "version", "endpoint"],
            )
            for ep, n in sorted(s.cloudevent_pairs_by_endpoint.items()):
                pairs.add_metric(mv + [ep], n)
            yield pairs
        yield counter(
            "incidentd_sidecar_cloudevents_unpaired_total",
            "Request or response events whose other half never came in time.",
            s.cloudevents_unpaired_total,
        )
