"""What incidentd writes to Elasticsearch: ECS-shaped documents, their ids and versions, and the index templates.

Pure functions over plain dicts; no client, no I/O. :mod:`collector.elasticsearch` (the sink) ships them.

    >>> doc = to_document(DocKind.EVENTS, {"event_id": "e1", "ts": 0.0, "event_type": "version_change"})
    >>> document_id(DocKind.EVENTS, doc) == document_id(DocKind.EVENTS, doc)   # deterministic: retries dedup
    True
    >>> sorted(index_templates("incidentd"))[0]
    'incidentd-actions'
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["DocKind", "document_id", "index_templates", "mappings_for", "state_version", "to_document"]


class DocKind(enum.StrEnum):
    EVENTS = "events"
    ANOMALIES = "anomalies"
    INCIDENTS = "incidents"
    ACTIONS = "actions"

    @property
    def is_stream(self) -> bool:
        """Append-only kinds go to data streams; kinds whose state changes go to plain indices."""
        return self in (DocKind.EVENTS, DocKind.ANOMALIES)



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


# ---- mappings and templates ----------------------------------------------------------------

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
