"""POST /webhooks/alertmanager (v4 payload) and POST /events (change events from deploy pipelines).

Alertmanager retries only on 5xx, so the rule here is: 2xx only after the evidence is committed, 5xx
when it cannot be stored, 4xx only for payloads that no retry could fix.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from diagnosis.types import ChangeKind, Evidence, EvidenceKind
from diagnosis.vocabulary import SIGNALS
from incidentd.api.deps import RuntimeDep, WebhookAuth
from incidentd.store import NotificationOutcome

router = APIRouter(tags=["webhooks"])


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1)


class AlertmanagerPayload(BaseModel):
    """Alertmanager webhook payload, version 4."""

    model_config = ConfigDict(extra="allow")
    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert]


def _model_of(labels: dict[str, str]) -> str:
    return labels.get("model") or labels.get("service") or labels.get("job") or "unknown"


def _evidence_id(fingerprint: str, starts_at: datetime) -> str:
    return f"alert-{fingerprint}-{int(starts_at.timestamp())}"


class GrafanaPayload(BaseModel):
    """Grafana-alerting webhook payload (unified alerting, version "1"): Alertmanager-shaped alerts."""

    model_config = ConfigDict(extra="allow")
    receiver: str = ""
    status: Literal["firing", "resolved"]
    orgId: int | None = None
    version: str = "1"
    truncatedAlerts: int = Field(0, ge=0)
    alerts: list[AlertmanagerAlert]


@router.post("/webhooks/alertmanager", dependencies=[WebhookAuth])
def alertmanager(payload: AlertmanagerPayload, runtime: RuntimeDep) -> dict[str, Any]:
    return _ingest(payload.alerts, payload.receiver, payload.truncatedAlerts, "alertmanager", runtime)


@router.post("/webhooks/grafana", dependencies=[WebhookAuth])
def grafana(payload: GrafanaPayload, runtime: RuntimeDep) -> dict[str, Any]:
    return _ingest(payload.alerts, payload.receiver, payload.truncatedAlerts, "grafana", runtime)


def _ingest(alerts: list[AlertmanagerAlert], receiver: str, truncated: int, source: str,
            runtime: Any) -> dict[str, Any]:
    """Store each alert notification once; the same semantics for Alertmanager and Grafana."""
    store = runtime.store
    accepted = duplicates = stale = 0
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
                                  "source": source})
        # One transaction per notification: resolved wins over firing for the same episode, whatever the
        # arrival order (Alertmanager run as an HA pair sends both, concurrently).
        outcome = store.apply_notification(alert.fingerprint, starts, alert.status, ev,
                                           alert.endsAt.timestamp() if alert.endsAt else None, time.time())
        if outcome is NotificationOutcome.ACCEPTED:
            accepted += 1
        elif outcome is NotificationOutcome.STALE:
            stale += 1
        else:
            duplicates += 1
    runtime.metrics.webhooks.labels(source, "accepted").inc(accepted)
    runtime.metrics.webhooks.labels(source, "duplicate").inc(duplicates)
    return {"accepted": accepted, "duplicates": duplicates, "stale": stale, "truncated_alerts": truncated}


class ChangeEventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    kind: ChangeKind
    at: float | None = None
    description: str = ""
    version: str | None = None
    previous_version: str | None = None


@router.post("/events", dependencies=[WebhookAuth])
def change_event(body: ChangeEventBody, runtime: RuntimeDep) -> dict[str, Any]:
    at = body.at or time.time()
    eid = f"chg-{body.model}-{body.kind.value}-{int(at * 1000)}"
    runtime.store.save_evidence(Evidence(eid, EvidenceKind.CHANGE, body.model, body.kind.value, at,
                                         body.description or f"{body.kind.value} of {body.model}",
                                         attributes={"to": body.version, "from": body.previous_version,
                                                     "by": "api"}))
    return {"id": eid}
