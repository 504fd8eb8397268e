"""POST /webhooks/alertmanager (v4 payload) and POST /events (change events from deploy pipelines).

Alertmanager retries only on 5xx, so the rule here is: 2xx only after the evidence is committed, 5xx
when it cannot be stored, 4xx only for payloads that no retry could fix.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from diagnosis.types import ChangeKind, Evidence, EvidenceKind
from diagnosis.vocabulary import SIGNALS
from incidentd.api.deps import Ingester, RuntimeDep, WebhookIngester
from incidentd.api.responses import INGEST, WEBHOOK
from incidentd.auth.scopes import Identity
from incidentd.store import NotificationOutcome

router = APIRouter(tags=["webhooks"])

# Bounds on what one payload may hold: a payload within them is answered in well under a second, and one
# beyond them is refused with 422 naming the field (Alertmanager: set max_alerts to MAX_ALERTS, so that it
# truncates and reports truncatedAlerts instead).
MAX_ALERTS = 1000
MAX_LABELS = 64
Short = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=8192)]
Labels = Annotated[dict[Short, Annotated[str, StringConstraints(max_length=1024)]], Field(max_length=MAX_LABELS)]
Annotations = Annotated[dict[Short, Text], Field(max_length=MAX_LABELS)]


def _rfc3339_only(v: object) -> object:
    if not isinstance(v, str | datetime):
        raise ValueError("must be an RFC 3339 time string, e.g. 2024-05-01T12:00:00Z")
    return v


def _json_integer(v: object) -> object:
    # JSON Schema's integer: a number with no fraction (3 or 3.0); never a bool or a string.
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError("must be an integer")
    return int(v)


Count = Annotated[int, Field(ge=0, le=2**53), BeforeValidator(_json_integer)]

# Timestamps are RFC 3339 strings only: a number (``endsAt: 0``) is not a time Alertmanager would send.
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_only)]


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    startsAt: Timestamp
    endsAt: Timestamp | None = None
    generatorURL: Text = ""
    fingerprint: str = Field(min_length=1, max_length=128)


class AlertmanagerPayload(BaseModel):
    """Alertmanager webhook payload, version 4."""

    model_config = ConfigDict(extra="allow")
    version: Literal["4"]
    groupKey: Text
    truncatedAlerts: Count = 0
    status: Literal["firing", "resolved"]
    receiver: Short
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Annotations = Field(default_factory=dict)
    externalURL: Text = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS)


def _model_of(labels: dict[str, str]) -> str:
    return labels.get("model") or labels.get("service") or labels.get("job") or "unknown"


def _evidence_id(fingerprint: str, starts_at: datetime) -> str:
    return f"alert-{fingerprint}-{int(starts_at.timestamp())}"


class GrafanaPayload(BaseModel):
    """Grafana-alerting webhook payload (unified alerting, version "1"): Alertmanager-shaped alerts."""

    model_config = ConfigDict(extra="allow")
    receiver: Short = ""
    status: Literal["firing", "resolved"]
    orgId: Count | None = None
    version: Short = "1"
    truncatedAlerts: Count = 0
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS)


@router.post("/webhooks/alertmanager", responses=WEBHOOK)
def alertmanager(payload: AlertmanagerPayload, runtime: RuntimeDep, who: WebhookIngester) -> dict[str, Any]:
    return _ingest(payload.alerts, payload.receiver, payload.truncatedAlerts, "alertmanager", runtime, who)


@router.post("/webhooks/grafana", responses=INGEST)
def grafana(payload: GrafanaPayload, runtime: RuntimeDep, who: Ingester) -> dict[str, Any]:
    return _ingest(payload.alerts, payload.receiver, payload.truncatedAlerts, "grafana", runtime, who)


def _ingest(alerts: list[AlertmanagerAlert], receiver: str, truncated: int, source: str,
            runtime: Any, who: Identity) -> dict[str, Any]:
    """Store each alert notification once; the same semantics for Alertmanager and Grafana.

    One transaction for the whole payload: one fsync per delivery, not one per alert.
    """
    store = runtime.store
    batch: list[tuple[str, str, str, Evidence, float | None]] = []
    for alert in alerts:
        starts = alert.startsAt.isoformat()
        eid = _evidence_id(alert.fingerprint, alert.startsAt)
        name = alert.labels.get("alertname", "unnamed")
        model = _model_of(alert.labels)
        signal = alert.labels.get("signal")
        ev = Evidence(eid, EvidenceKind.ALERT, model, name, alert.startsAt.timestamp(),
                      alert.annotations.get("summary") or alert.annotations.get("description") or name,
                      attributes={"labels": alert.labels, "fingerprint": alert.fingerprint,
                                  "signal": signal if signal in SIGNALS else None,
                                  "generator_url": alert.generatorURL, "receiver": receiver,
                                  "source": source, "received_by": who.label})
        batch.append((alert.fingerprint, starts, alert.status, ev,
                      alert.endsAt.timestamp() if alert.endsAt else None))
    # One transaction for the delivery, each notification applied inside it by the store: resolved wins over
    # firing for the same episode, whatever the arrival order (Alertmanager run as an HA pair sends both,
    # concurrently); a late firing for a resolved episode is recorded as stale, never reopens it.
    outcomes = store.apply_notifications(batch, time.time())
    accepted = sum(1 for o in outcomes if o is NotificationOutcome.ACCEPTED)
    stale = sum(1 for o in outcomes if o is NotificationOutcome.STALE)
    duplicates = sum(1 for o in outcomes if o is NotificationOutcome.DUPLICATE)
    runtime.metrics.webhooks.labels(source, "accepted").inc(accepted)
    runtime.metrics.webhooks.labels(source, "duplicate").inc(duplicates)
    return {"accepted": accepted, "duplicates": duplicates, "stale": stale, "truncated_alerts": truncated}


# Seconds since the Unix epoch, up to the year 2286: JSON numbers only (``false`` is not a time), finite.
EpochSeconds = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e10)]


class ChangeEventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    kind: ChangeKind
    at: EpochSeconds | None = None
    description: str = Field("", max_length=2000)
    version: str | None = Field(None, max_length=200)
    previous_version: str | None = Field(None, max_length=200)


@router.post("/events", responses=INGEST)
def change_event(body: ChangeEventBody, runtime: RuntimeDep, who: Ingester) -> dict[str, Any]:
    at = time.time() if body.at is None else body.at
    eid = f"chg-{body.model}-{body.kind.value}-{int(at * 1000)}"
    # Who sent it is recorded; one from an unauthenticated source never triggers an automatic action
    # (remediation/approval.py).
    runtime.store.save_evidence(Evidence(eid, EvidenceKind.CHANGE, body.model, body.kind.value, at,
                                         body.description or f"{body.kind.value} of {body.model}",
                                         attributes={"to": body.version, "from": body.previous_version,
                                                     "by": who.label, "authenticated": who.authenticated}))
    return {"id": eid}
