"""Durable shipping of events, anomalies, incidents and actions to Elasticsearch.

Every document first lands in a disk spool (append-only segment files of length-prefixed,
CRC32-checksummed, fsync'd records); ``emit`` returns once the batch is on disk. A background
flusher drains the spool with the official client's bulk helper, using deterministic document ids
so that a retried batch never creates a duplicate:

* events and anomalies go to data streams (``op_type=create``; a 409 on a known id means the
  document is already there, which counts as success);
* incidents and actions go to plain indices keyed by their id (``op_type=index`` with external
  versions, so an older state never overwrites a newer one).

Failures are classified per item: 429, 5xx and connection errors are retried with capped
exponential backoff for as long as the server is away (nothing is lost during an outage);
any other 4xx (a mapping error, a malformed document) goes to a dead-letter JSONL file and is
never retried. The spool has a size cap with a declared :class:`SpoolPolicy`; whatever the
policy drops is counted in ``incidentd_es_spool_dropped_total``.

    >>> sink = ElasticsearchSink("http://127.0.0.1:9200", spool_dir="/tmp/spool")  # doctest: +SKIP
    >>> sink.emit([make_event(EventType.VERSION_CHANGE, model="digits", version="v2", at=0.0)])  # doctest: +SKIP
    >>> sink.flush(timeout=10.0)  # doctest: +SKIP
    True
    >>> sink.close()  # doctest: +SKIP

The ``elasticsearch`` client is imported lazily; its major version must match the server's
(the 8.x client for an 8.x server: a 9.x client sends headers an 8.x server rejects).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.es_documents import (
    DocKind,
    document_id,
    index_templates,
    mappings_for,
    state_version,
    to_document,
)
from collector.spool import Spool, SpoolPolicy, SpoolRecord
from detectors.errors import IncidentdError

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

# The documents and the spool live in their own modules; they are re-exported here for existing callers.
__all__ = ["DocKind", "ElasticsearchSink", "ElasticsearchSinkError", "Spool", "SpoolPolicy", "SpoolRecord",
           "document_id", "index_templates", "mappings_for", "state_version", "to_document"]


class ElasticsearchSinkError(IncidentdError):
    """The sink cannot accept documents (spool unwritable, sink closed)."""



class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        reg = registry if registry is not None else CollectorRegistry()
        self.dropped = Counter("incidentd_es_spool_dropped", "Documents dropped by the spool size-cap policy.",
                               registry=reg)
        self.corrupt = Counter("incidentd_es_spool_corrupt_records",
                               "Spool records skipped because their checksum or framing was bad.", registry=reg)
        self.spool_bytes = Gauge("incidentd_es_spool_bytes", "Bytes in the Elasticsearch spool.", registry=reg)
        self.indexed = Counter("incidentd_es_documents_indexed", "Documents accepted by Elasticsearch.",
                               ["kind"], registry=reg)
        self.duplicates = Counter("incidentd_es_documents_duplicate",
                                  "Documents Elasticsearch already had (409 on create): idempotent retries.",
                                  ["kind"], registry=reg)
        self.dead = Counter("incidentd_es_dead_letter_documents",
                            "Documents rejected permanently (e.g. mapping errors) and written to the dead letter.",
                            ["kind"], registry=reg)
        self.retries = Counter("incidentd_es_bulk_retries", "Bulk attempts retried after 429, 5xx or no connection.",
                               registry=reg)
        self.errors = Counter("incidentd_es_errors", "Unexpected errors in the Elasticsearch flusher.",
                              registry=reg)


def _retriable(status: Any) -> bool:
    return not isinstance(status, int) or status == 429 or status >= 500


class ElasticsearchSink:
    """The sidecar's durable :class:`collector.sinks.EventSink` for Elasticsearch.

        >>> sink = ElasticsearchSink("http://127.0.0.1:9200", spool_dir="/var/lib/incidentd/es-spool",
        ...                          dead_letter_path="/var/lib/incidentd/es-dead-letter.jsonl")  # doctest: +SKIP
        >>> sink.emit([{"event_id": "e1", "ts": 0.0, "event_type": "version_change", "model": "m"}])  # doctest: +SKIP
        >>> sink.mirror_incident({"id": "inc-1", "status": "open", "updated_at": 1.0})  # doctest: +SKIP
        >>> sink.close()  # doctest: +SKIP

    ``emit`` and the ``mirror_*``/``index_anomalies`` methods return once the documents are in the
    spool on disk; shipping happens in a background thread (``start=False`` leaves it to
    :meth:`drain`, for tests and one-shot tools).
    """

    def __init__(self, url: str, index_prefix: str = "incidentd", *, spool_dir: str | os.PathLike[str],
                 spool_max_bytes: int = 256 * 1024 * 1024, spool_policy: SpoolPolicy = SpoolPolicy.DROP_OLDEST,
                 dead_letter_path: str | os.PathLike[str] | None = None, registry: CollectorRegistry | None = None,
                 batch_size: int = 500, flush_interval: float = 1.0, request_timeout: float = 10.0,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0, retention: str = "30d",
                 client: Any = None, client_kwargs: dict[str, Any] | None = None, start: bool = True,
                 fsync: bool = True) -> None:
        self.url = url
        self.prefix = index_prefix
        self.retention = retention
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.spool = Spool(spool_dir, max_bytes=spool_max_bytes, policy=spool_policy, fsync=fsync)
        self.dead_letter_path = Path(dead_letter_path) if dead_letter_path else Path(spool_dir) / "dead-letter.jsonl"
        self.metrics = _Metrics(registry)
        self.data_streams: bool | None = None
        self._client = client
        self._client_kwargs = {"request_timeout": request_timeout, "max_retries": 0, "retry_on_timeout": False,
                               **(client_kwargs or {})}
        self._templates_ready = False
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._drain_lock = threading.Lock()
        self._seen_dropped = 0
        self._seen_corrupt = 0
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="es-sink-flusher", daemon=True)
            self._thread.start()

    # -- the client -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from elasticsearch import Elasticsearch

            self._client = Elasticsearch(self.url, **self._client_kwargs)
        return self._client

    def index_name(self, kind: DocKind) -> str:
        return f"{self.prefix}-{kind.value}"

    def ensure_templates(self) -> None:
        """Install the index templates (data streams with a lifecycle where the server supports them).

        Creates the incidents/actions indices too, so that their mappings exist before the first
        document. Raises the client's error when the server is unreachable.
        """
        from elasticsearch import BadRequestError

        attempts = [(True, True), (True, False), (False, False)]
        for data_streams, lifecycle in attempts:
            try:
                for name, body in index_templates(self.prefix, data_streams=data_streams, lifecycle=lifecycle,
                                                  retention=self.retention).items():
                    self.client.indices.put_index_template(name=name, **body)
            except BadRequestError as exc:
                log.warning("index template rejected (data_streams=%s lifecycle=%s): %s",
                            data_streams, lifecycle, exc)
                continue
            self.data_streams = data_streams
            break
        else:
            raise ElasticsearchSinkError("Elasticsearch rejected every variant of the incidentd index templates")
        for kind in DocKind:
            plain_index = not kind.is_stream or not self.data_streams
            if plain_index and not self.client.indices.exists(index=self.index_name(kind)):
                # 400 = created meanwhile by another writer (resource_already_exists): fine.
                self.client.options(ignore_status=400).indices.create(index=self.index_name(kind))
        self._templates_ready = True

    # -- intake -----------------------------------------------------------------------------
    def _enqueue(self, kind: DocKind, raws: Iterable[dict[str, Any]], *, versioned: bool = False) -> int:
        if self._closed:
            raise ElasticsearchSinkError("the Elasticsearch sink is closed")
        payloads = []
        for raw in raws:
            doc = to_document(kind, raw)
            rec: dict[str, Any] = {"k": kind.value, "id": document_id(kind, doc), "doc": doc}
            if versioned:
                version = state_version(raw)
                if version is not None:
                    rec["v"] = version
            payloads.append(json.dumps(rec, separators=(",", ":"), default=str).encode())
        try:
            stored = self.spool.append(payloads)
        except OSError as exc:
            raise ElasticsearchSinkError(f"cannot write the Elasticsearch spool in {self.spool.dir}: {exc}") from exc
        self._sync_spool_metrics()
        self._idle.clear()
        self._wake.set()
        return stored

    def emit(self, events: list[dict[str, Any]]) -> None:
        """Spool a batch of sidecar events (``collector.sinks.make_event`` dicts) for shipping."""
        self._enqueue(DocKind.EVENTS, events)

    def index_anomalies(self, anomalies: list[dict[str, Any]]) -> None:
        """Spool detector anomalies (``dataclasses.asdict(Anomaly)``-like dicts)."""
        self._enqueue(DocKind.ANOMALIES, anomalies)

    def mirror_incident(self, doc: dict[str, Any]) -> None:
        """Mirror an incident's current state (``Incident.to_dict()``); the newest state wins."""
        self._enqueue(DocKind.INCIDENTS, [doc], versioned=True)

    def mirror_action(self, doc: dict[str, Any]) -> None:
        """Mirror an action's current state (``ActionRecord.to_dict()``); the newest state wins."""
        self._enqueue(DocKind.ACTIONS, [doc], versioned=True)

    # -- shipping ---------------------------------------------------------------------------
    def _sync_spool_metrics(self) -> None:
        if self.spool.dropped > self._seen_dropped:
            self.metrics.dropped.inc(self.spool.dropped - self._seen_dropped)
            self._seen_dropped = self.spool.dropped
        if self.spool.corrupt > self._seen_corrupt:
            self.metrics.corrupt.inc(self.spool.corrupt - self._seen_corrupt)
            self._seen_corrupt = self.spool.corrupt
        self.metrics.spool_bytes.set(self.spool.size_bytes)

    def _action(self, rec: dict[str, Any]) -> dict[str, Any]:
        kind = DocKind(rec["k"])
        action: dict[str, Any] = {"_index": self.index_name(kind), "_id": rec["id"], "_source": rec["doc"]}
        if kind.is_stream:
            action["_op_type"] = "create"
        else:
            action["_op_type"] = "index"
            if "v" in rec:
                action["version"] = rec["v"]
                action["version_type"] = "external_gte"
        return action

    def _dead_letter(self, rec: dict[str, Any], status: Any, error: Any) -> None:
        line = json.dumps({"at": time.time(), "kind": rec["k"], "id": rec["id"], "status": status, "error": error,
                           "doc": rec["doc"]}, default=str)
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dead_letter_path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.metrics.dead.labels(kind=rec["k"]).inc()
        log.error("elasticsearch rejected %s document %s (%s): dead-lettered", rec["k"], rec["id"], status)

    def _ship(self, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send once; returns the records to retry. Raises on a transport failure (retry all)."""
        from elasticsearch.helpers import streaming_bulk

        actions = [self._action(r) for r in recs]
        retry: list[dict[str, Any]] = []
        results = streaming_bulk(self.client, actions, chunk_size=self.batch_size, max_retries=0,
                                 raise_on_error=False, raise_on_exception=False, yield_ok=True)
        n = 0
        for rec, (ok, info) in zip(recs, results, strict=False):
            n += 1
            item = next(iter(info.values())) if info else {}
            status = item.get("status")
            if ok:
                self.metrics.indexed.labels(kind=rec["k"]).inc()
            elif status == 409:
                self.metrics.duplicates.labels(kind=rec["k"]).inc()
            elif _retriable(status):
                retry.append(rec)
            else:
                self._dead_letter(rec, status, item.get("error"))
        retry.extend(recs[n:])
        return retry

    def drain(self, max_batches: int | None = None, timeout: float | None = None) -> int:
        """Ship spooled documents until the spool is empty; returns how many records were settled.

        Retries 429/5xx/connection failures with capped exponential backoff until they succeed, the
        sink is stopped or ``timeout`` seconds pass (what is unsent stays in the spool); permanent
        errors go to the dead letter.
        """
        settled = 0
        batches = 0
        deadline = None if timeout is None else time.monotonic() + timeout

        def expired() -> bool:
            return deadline is not None and time.monotonic() >= deadline

        with self._drain_lock:
            while not self._stop.is_set() and not expired():
                records = self.spool.read(self.batch_size)
                if not records:
                    break
                if not self._templates_ready:
                    self._with_backoff(self.ensure_templates, expired)
                    if not self._templates_ready:
                        break
                recs = []
                for r in records:
                    if not r.payload:
                        continue  # corrupt record: already counted, skipped
                    try:
                        recs.append(json.loads(r.payload))
                    except ValueError:
                        self.spool.corrupt += 1
                pending = recs
                delay = self.backoff_initial
                while pending and not self._stop.is_set() and not expired():
                    try:
                        pending = self._ship(pending)
                    except Exception as exc:  # noqa: BLE001 - transport errors of every kind are retried
                        log.warning("elasticsearch bulk failed, will retry: %s", exc)
                    if pending:
                        self.metrics.retries.inc()
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.backoff_max)
                if pending:
                    break  # stopped or out of time while retrying: the batch stays in the spool
                self.spool.commit(records[-1])
                self._sync_spool_metrics()
                settled += len(records)
                batches += 1
                if max_batches is not None and batches >= max_batches:
                    break
        return settled

    def _with_backoff(self, fn: Any, expired: Any = lambda: False) -> None:
        delay = self.backoff_initial
        while not self._stop.is_set() and not expired():
            try:
                fn()
                return
            except ElasticsearchSinkError:
                raise
            except Exception as exc:  # noqa: BLE001 - server away: wait and retry
                log.warning("elasticsearch not ready (%s), retrying in %.1fs", exc, delay)
                self.metrics.retries.inc()
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain()
            except Exception:
                self.metrics.errors.inc()
                log.exception("elasticsearch flusher error")
                self._stop.wait(self.backoff_max)
            if self.spool.is_empty():
                self._idle.set()
            self._wake.wait(self.flush_interval)
            self._wake.clear()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the spool is drained (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        if self._thread is None:
            self.drain(timeout=timeout)
            return self.spool.is_empty()
        while time.monotonic() < deadline:
            if self.spool.is_empty():
                return True
            self._wake.set()
            time.sleep(0.1)
        return self.spool.is_empty()

    def close(self, timeout: float = 5.0) -> None:
        """Try to drain for ``timeout`` seconds, then stop; what is left stays in the spool."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.backoff_max + 5)
        self.spool.close()
        if self._client is not None:
            self._client.close()
