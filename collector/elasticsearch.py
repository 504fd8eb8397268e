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

import enum
import hashlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detectors.errors import IncidentdError

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

__all__ = ["DocKind", "ElasticsearchSink", "ElasticsearchSinkError", "Spool", "SpoolPolicy", "SpoolRecord",
           "document_id", "index_templates", "mappings_for", "state_version", "to_document"]


class ElasticsearchSinkError(IncidentdError):
    """The sink cannot accept documents (spool unwritable, sink closed)."""


class DocKind(enum.StrEnum):
    EVENTS = "events"
    ANOMALIES = "anomalies"
    INCIDENTS = "incidents"
    ACTIONS = "actions"

    @property
    def is_stream(self) -> bool:
        """Append-only kinds go to data streams; kinds whose state changes go to plain indices."""
        return self in (DocKind.EVENTS, DocKind.ANOMALIES)


class SpoolPolicy(enum.StrEnum):
    """What the spool does when it reaches ``spool_max_bytes``."""

    DROP_OLDEST = "drop_oldest"   # delete the oldest closed segment (keep the newest data)
    DROP_NEWEST = "drop_newest"   # refuse the incoming batch (keep the oldest data)


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------

def _iso(value: Any) -> str | None:
    """A timestamp as ISO-8601 UTC; accepts epoch seconds, datetimes and ISO strings."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC).isoformat()
    return str(value)


def _version_of(value: Any) -> int | None:
    """An external document version (epoch milliseconds) from a timestamp, or None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(float(value) * 1000)
    try:
        dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def state_version(raw: dict[str, Any]) -> int | None:
    """The external version of an incident/action state: newer states get larger numbers.

    ``updated_at`` when the record has one; otherwise the latest of its lifecycle timestamps plus
    the length of its audit trail (which only grows), in milliseconds.
    """
    if raw.get("updated_at") is not None:
        return _version_of(raw["updated_at"])
    stamps = [v for v in (_version_of(raw.get(k)) for k in ("verified_at", "executed_at", "created_at",
                                                              "opened_at")) if v is not None]
    if not stamps:
        return None
    audit = raw.get("audit")
    return max(stamps) + (len(audit) if isinstance(audit, list) else 0)


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != {}}


def _enum_value(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


_EVENT_KEYS = {"event_id", "@timestamp", "ts", "event_type", "source", "model", "version", "message"}
_ANOMALY_KEYS = {"detector", "series", "signal", "labels", "window_start", "window_end", "onset", "score",
                 "direction", "value", "statistic", "p_value", "extra", "model", "version"}
_INCIDENT_KEYS = {"id", "incident_id", "status", "severity", "dedup_key", "title", "summary", "model", "version",
                  "created_at", "opened_at", "updated_at", "resolved_at", "root_cause", "fault_domain",
                  "confidence", "hypotheses"}
_ACTION_KEYS = {"id", "action_id", "incident_id", "kind", "target", "mode", "status", "verdict", "outcome",
                "created_at", "executed_at", "verified_at", "updated_at", "dry_run", "params", "model", "version",
                "message", "reason"}


def _details(raw: dict[str, Any], known: set[str]) -> dict[str, Any] | None:
    rest = {k: v for k, v in raw.items() if k not in known}
    return json.loads(json.dumps(rest, default=str)) if rest else None


def _labels(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return {str(k): str(v) for k, v in raw}
    return {}


def to_document(kind: DocKind, raw: dict[str, Any]) -> dict[str, Any]:
    """Map one incidentd record onto the ECS-style document stored in Elasticsearch.

    Known keys land on ECS fields (``@timestamp``, ``event.*``, ``service.*``, ``message``) or
    under ``incidentd.<kind>``; anything else is kept under ``incidentd.details`` (flattened).
    """
    raw = {k: _enum_value(v) for k, v in raw.items()}
    if kind is DocKind.EVENTS:
        ts = raw.get("@timestamp") if raw.get("@timestamp") is not None else raw.get("ts")
        return _compact({
            "@timestamp": _iso(ts if ts is not None else time.time()),
            "message": raw.get("message"),
            "event": _compact({"id": raw.get("event_id"), "kind": "event", "action": raw.get("event_type"),
                               "provider": raw.get("source"), "dataset": "incidentd.events"}),
            "service": _compact({"name": raw.get("model"), "version": raw.get("version")}),
            "incidentd": _compact({"details": _details(raw, _EVENT_KEYS)}),
        })
    if kind is DocKind.ANOMALIES:
        labels = _labels(raw.get("labels"))
        extra = raw.get("extra") or {}
        details = _details(raw, _ANOMALY_KEYS) or {}
        details.update({f"extra.{k}": v for k, v in extra.items()})
        return _compact({
            "@timestamp": _iso(raw.get("onset", raw.get("window_end"))),
            "event": {"kind": "alert", "action": "anomaly_detected", "provider": raw.get("detector"),
                      "dataset": "incidentd.anomalies"},
            "service": _compact({"name": raw.get("model", labels.get("model")),
                                 "version": raw.get("version", labels.get("version"))}),
            "labels": labels or None,
            "incidentd": _compact({
                "anomaly": _compact({
                    "detector": raw.get("detector"), "series": raw.get("series"), "signal": raw.get("signal"),
                    "score": raw.get("score"), "direction": raw.get("direction"), "value": raw.get("value"),
                    "statistic": raw.get("statistic"), "p_value": raw.get("p_value"),
                    "window_start": _iso(raw.get("window_start")), "window_end": _iso(raw.get("window_end")),
                    "onset": _iso(raw.get("onset")),
                }),
                "details": details or None,
            }),
        })
    if kind is DocKind.INCIDENTS:
        inc_id = raw.get("id", raw.get("incident_id"))
        hyps = raw.get("hypotheses") or []
        top = hyps[0] if hyps and isinstance(hyps[0], dict) else {}
        opened = raw.get("opened_at", raw.get("created_at"))
        return _compact({
            "@timestamp": _iso(opened if opened is not None else time.time()),
            "message": raw.get("title") or raw.get("summary"),
            "event": {"id": str(inc_id), "kind": "state", "dataset": "incidentd.incidents"},
            "service": _compact({"name": raw.get("model"), "version": raw.get("version")}),
            "incidentd": _compact({
                "incident": _compact({
                    "id": str(inc_id), "status": raw.get("status"), "severity": raw.get("severity"),
                    "dedup_key": raw.get("dedup_key"), "title": raw.get("title") or raw.get("summary"),
                    "opened": _iso(opened), "updated": _iso(raw.get("updated_at")),
                    "resolved": _iso(raw.get("resolved_at")),
                    "root_cause": raw.get("root_cause", _enum_value(top.get("root_cause"))),
                    "fault_domain": raw.get("fault_domain", _enum_value(top.get("domain"))),
                    "confidence": raw.get("confidence", top.get("confidence")),
                }),
                "details": _compact({**(_details(raw, _INCIDENT_KEYS) or {}),
                                     "hypotheses": json.loads(json.dumps(hyps, default=str)) if hyps else None}),
            }),
        })
    if kind is DocKind.ACTIONS:
        act_id = raw.get("id", raw.get("action_id"))
        outcome = raw.get("outcome")
        created = raw.get("created_at", raw.get("executed_at"))
        return _compact({
            "@timestamp": _iso(created if created is not None else time.time()),
            "message": raw.get("message") or raw.get("reason"),
            "event": _compact({"id": str(act_id), "kind": "event", "action": raw.get("kind"),
                               "outcome": outcome if outcome in ("success", "failure", "unknown") else None,
                               "dataset": "incidentd.actions"}),
            "service": _compact({"name": raw.get("model"), "version": raw.get("version")}),
            "incidentd": _compact({
                "action": _compact({
                    "id": str(act_id), "incident_id": raw.get("incident_id"), "kind": raw.get("kind"),
                    "target": raw.get("target"), "mode": raw.get("mode"), "status": raw.get("status"),
                    "verdict": raw.get("verdict"), "dry_run": raw.get("dry_run"),
                    "created": _iso(raw.get("created_at")), "executed": _iso(raw.get("executed_at")),
                    "verified": _iso(raw.get("verified_at")), "updated": _iso(raw.get("updated_at")),
                }),
                "details": _details(raw, _ACTION_KEYS) or (
                    {"params": json.loads(json.dumps(raw["params"], default=str))} if raw.get("params") else None),
            }),
        })
    raise ValueError(f"unknown document kind: {kind!r}")


def document_id(kind: DocKind, doc: dict[str, Any]) -> str:
    """A deterministic id: the entity id for incidents/actions, a content hash for everything else.

    Events carry a unique ``event.id``, so equal events (a retried batch) hash equal and distinct
    events never collide.
    """
    if not kind.is_stream:
        return str(doc["event"]["id"])
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{kind.value}\n{canonical}".encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Mappings and templates
# --------------------------------------------------------------------------------------------

_KW = {"type": "keyword", "ignore_above": 1024}
_DATE = {"type": "date"}
_TEXT_KW = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}

_COMMON: dict[str, Any] = {
    "@timestamp": _DATE,
    "message": _TEXT_KW,
    "event": {"properties": {"id": _KW, "kind": _KW, "action": _KW, "provider": _KW, "dataset": _KW,
                             "outcome": _KW}},
    "service": {"properties": {"name": _KW, "version": _KW}},
    "labels": {"type": "flattened", "ignore_above": 1024},
}

_SPECIFIC: dict[DocKind, dict[str, Any]] = {
    DocKind.EVENTS: {},
    DocKind.ANOMALIES: {"anomaly": {"properties": {
        "detector": _KW, "series": _KW, "signal": _KW, "score": {"type": "double"}, "direction": _KW,
        "value": {"type": "double"}, "statistic": {"type": "double"}, "p_value": {"type": "double"},
        "window_start": _DATE, "window_end": _DATE, "onset": _DATE}}},
    DocKind.INCIDENTS: {"incident": {"properties": {
        "id": _KW, "status": _KW, "severity": _KW, "dedup_key": _KW, "title": _TEXT_KW, "opened": _DATE,
        "updated": _DATE, "resolved": _DATE, "root_cause": _KW, "fault_domain": _KW,
        "confidence": {"type": "double"}}}},
    DocKind.ACTIONS: {"action": {"properties": {
        "id": _KW, "incident_id": _KW, "kind": _KW, "target": _KW, "mode": _KW, "status": _KW, "verdict": _KW,
        "dry_run": {"type": "boolean"}, "created": _DATE, "executed": _DATE, "verified": _DATE,
        "updated": _DATE}}},
}


def mappings_for(kind: DocKind) -> dict[str, Any]:
    """Explicit, strict mappings: a document that does not fit is a mapping error (dead-lettered)."""
    # Free-form details (timelines, plans, audit trails) are searchable as keywords; a long text
    # leaf is kept in _source but not indexed (a keyword term above 32 KiB would fail the document).
    incidentd = {"properties": {"details": {"type": "flattened", "ignore_above": 4096}, **_SPECIFIC[kind]}}
    return {"dynamic": "strict", "properties": {**_COMMON, "incidentd": incidentd}}


def index_templates(prefix: str = "incidentd", *, data_streams: bool = True, lifecycle: bool = True,
                    retention: str = "30d") -> dict[str, dict[str, Any]]:
    """The composable index templates, by template name."""
    out: dict[str, dict[str, Any]] = {}
    for kind in DocKind:
        template: dict[str, Any] = {
            "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0,
                                   "auto_expand_replicas": "0-1"}},
            "mappings": mappings_for(kind),
        }
        body: dict[str, Any] = {
            "index_patterns": [f"{prefix}-{kind.value}*"],
            "priority": 200,
            "template": template,
            "_meta": {"managed_by": "incidentd", "kind": kind.value},
        }
        if kind.is_stream and data_streams:
            body["data_stream"] = {}
            if lifecycle:
                template["lifecycle"] = {"data_retention": retention}
        out[f"{prefix}-{kind.value}"] = body
    return out


# --------------------------------------------------------------------------------------------
# The spool
# --------------------------------------------------------------------------------------------

_HEADER = struct.Struct(">4sII")          # magic, payload length, crc32(payload)
_MAGIC = b"IDS1"
_MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    segment: int
    offset: int       # where the record starts
    end: int          # where the next record starts
    payload: bytes


class Spool:
    """Append-only, checksummed, fsync'd segment files with a committed read cursor.

    Records are ``magic | length | crc32 | payload``. ``read`` yields records after the cursor;
    ``commit`` persists the cursor atomically. A record whose checksum fails is skipped and
    counted; an unreadable tail (torn write) ends that segment. Above ``max_bytes`` the policy
    decides what is dropped; ``dropped`` counts every dropped record.

        >>> import tempfile
        >>> s = Spool(tempfile.mkdtemp())
        >>> s.append([b"a", b"b"])
        2
        >>> [r.payload for r in s.read(10)]
        [b'a', b'b']
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 256 * 1024 * 1024,
                 segment_bytes: int = 8 * 1024 * 1024, policy: SpoolPolicy = SpoolPolicy.DROP_OLDEST,
                 fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self.policy = policy
        self.fsync = fsync
        self.dropped = 0
        self.corrupt = 0
        self._lock = threading.RLock()
        self._cursor_path = self.dir / "cursor.json"
        self._cursor = self._load_cursor()
        for n in self._segments():
            if self._seg_path(n).stat().st_size == 0:
                self._seg_path(n).unlink()
        segs = self._segments()
        # Always append to a fresh segment: the previous process may have left a torn tail.
        self._active = max([*segs, self._cursor[0], 0]) + 1
        self._fh = open(self._seg_path(self._active), "ab")  # noqa: SIM115 - kept open for appends

    # -- layout ------------------------------------------------------------------------------
    def _seg_path(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(p.name[4:16]) for p in self.dir.glob("seg-*.log"))

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads(self._cursor_path.read_text())
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    def _fsync_dir(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def size_bytes(self) -> int:
        total = 0
        for n in self._segments():
            try:
                total += self._seg_path(n).stat().st_size
            except FileNotFoundError:
                pass
        return total

    # -- writing -----------------------------------------------------------------------------
    def append(self, payloads: Iterable[bytes]) -> int:
        """Append records durably; returns how many were stored (0 when the policy refuses them)."""
        items = list(payloads)
        if not items:
            return 0
        blob = b"".join(_HEADER.pack(_MAGIC, len(p), zlib.crc32(p)) + p for p in items)
        with self._lock:
            if not self._make_room(len(blob)):
                self.dropped += len(items)
                return 0
            if self._fh.tell() > 0 and self._fh.tell() + len(blob) > self.segment_bytes:
                self._rotate()
            self._fh.write(blob)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        return len(items)

    def _rotate(self) -> None:
        self._fh.close()
        self._active += 1
        self._fh = open(self._seg_path(self._active), "ab")  # noqa: SIM115
        self._fsync_dir()

    def _make_room(self, incoming: int) -> bool:
        while self.size_bytes + incoming > self.max_bytes:
            if self.policy is SpoolPolicy.DROP_NEWEST:
                return False
            closed = [n for n in self._segments() if n != self._active]
            if not closed:
                # Only the active segment is left: close it so it can be dropped as a whole.
                if self._fh.tell() == 0:
                    return incoming <= self.max_bytes
                self._rotate()
                continue
            victim = closed[0]
            start = self._cursor[1] if victim == self._cursor[0] else 0
            if victim >= self._cursor[0]:
                self.dropped += sum(1 for _ in self._scan(victim, start, count_corrupt=False))
            self._seg_path(victim).unlink(missing_ok=True)
            if self._cursor[0] <= victim:
                self._set_cursor((victim + 1, 0))
            log.warning("elasticsearch spool over %d bytes: dropped segment %d", self.max_bytes, victim)
        return True

    # -- reading -----------------------------------------------------------------------------
    def _scan(self, seg: int, start: int, *, count_corrupt: bool = True) -> Iterator[SpoolRecord]:
        try:
            with open(self._seg_path(seg), "rb") as fh:
                fh.seek(start)
                pos = start
                while True:
                    head = fh.read(_HEADER.size)
                    if len(head) < _HEADER.size:
                        return
                    magic, length, crc = _HEADER.unpack(head)
                    if magic != _MAGIC or length > _MAX_RECORD:
                        # The framing itself is damaged: nothing after it can be trusted, so the
                        # rest of the segment is skipped (one empty record that moves the cursor).
                        if count_corrupt:
                            self.corrupt += 1
                            log.error("elasticsearch spool: unreadable data in segment %d at %d", seg, pos)
                        yield SpoolRecord(seg, pos, os.fstat(fh.fileno()).st_size, b"")
                        return
                    payload = fh.read(length)
                    if len(payload) < length:
                        # A torn write left by a crash (never acknowledged to the caller): skip it.
                        yield SpoolRecord(seg, pos, os.fstat(fh.fileno()).st_size, b"")
                        return
                    end = pos + _HEADER.size + length
                    if zlib.crc32(payload) != crc:
                        if count_corrupt:
                            self.corrupt += 1
                            log.error("elasticsearch spool: checksum mismatch in segment %d at %d", seg, pos)
                        yield SpoolRecord(seg, pos, end, b"")   # skipped, but the cursor moves past it
                    else:
                        yield SpoolRecord(seg, pos, end, payload)
                    pos = end
        except FileNotFoundError:
            return

    def read(self, limit: int) -> list[SpoolRecord]:
        """Up to ``limit`` records after the committed cursor (corrupt ones have empty payloads)."""
        out: list[SpoolRecord] = []
        with self._lock:
            seg, off = self._cursor
            for n in self._segments():
                if n < seg:
                    continue
                start = off if n == seg else 0
                for rec in self._scan(n, start):
                    out.append(rec)
                    if len(out) >= limit:
                        return out
        return out

    def commit(self, upto: SpoolRecord) -> None:
        """Mark every record up to and including ``upto`` as delivered; delete finished segments."""
        with self._lock:
            self._set_cursor((upto.segment, upto.end))
            for n in self._segments():
                if n < upto.segment and n != self._active:
                    self._seg_path(n).unlink(missing_ok=True)
            # A fully read closed segment can go too.
            if upto.segment != self._active:
                path = self._seg_path(upto.segment)
                try:
                    if path.stat().st_size <= upto.end:
                        path.unlink()
                        self._set_cursor((upto.segment + 1, 0))
                except FileNotFoundError:
                    pass

    def _set_cursor(self, cursor: tuple[int, int]) -> None:
        self._cursor = cursor
        tmp = self._cursor_path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"segment": cursor[0], "offset": cursor[1]}, fh)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self._cursor_path)
        self._fsync_dir()

    def is_empty(self) -> bool:
        """True when every record has been committed (cheap: compares the cursor with the file ends)."""
        with self._lock:
            seg, off = self._cursor
            for n in self._segments():
                if n < seg:
                    continue
                try:
                    size = self._seg_path(n).stat().st_size
                except FileNotFoundError:
                    continue
                if size > (off if n == seg else 0):
                    return False
            return True

    def pending(self) -> int:
        """How many records are not yet committed (reads the files; for tests and status)."""
        with self._lock:
            seg, off = self._cursor
            return sum(1 for n in self._segments() if n >= seg
                       for _ in self._scan(n, off if n == seg else 0, count_corrupt=False))

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


# --------------------------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------------------------

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
