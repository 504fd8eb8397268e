"""GET /incidents, GET /incidents/{id}, ack, resolve, action approval."""
from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from diagnosis import lifecycle
from diagnosis.types import IncidentStatus
from incidentd.api.deps import RuntimeDep, StoreDep
from incidentd.errors import Conflict

router = APIRouter(prefix="/incidents", tags=["incidents"])


class ActorBody(BaseModel):
    actor: str = Field("api", min_length=1, max_length=200)
    note: str = Field("", max_length=2000)


@router.get("")
def list_incidents(store: StoreDep, status: IncidentStatus | None = None, model: str | None = None,
                   limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    incs = store.incidents(status=status, model=model, limit=limit)
    return {"incidents": [i.to_dict() for i in incs], "count": len(incs)}


@router.get("/{incident_id}")
def get_incident(incident_id: str, store: StoreDep) -> dict[str, Any]:
    inc = store.incident(incident_id)
    return {**inc.to_dict(),
            "evidence": [e.to_dict() for e in store.evidence(inc.evidence_ids)],
            "actions": [a.to_dict() for a in store.actions(incident_id=inc.id)],
            "timeline": [t.to_dict() for t in store.timeline(inc.id)]}


@router.get("/{incident_id}/plot.png", response_class=Response)
def incident_plot(incident_id: str, runtime: RuntimeDep) -> Response:
    from incidentd.plots import render_incident

    inc = runtime.store.incident(incident_id)
    png = render_incident(inc, runtime.store, runtime.source, runtime.settings.scrape_interval_seconds)
    return Response(png, media_type="image/png")


@router.post("/{incident_id}/ack")
def ack(incident_id: str, store: StoreDep, body: ActorBody | None = None) -> dict[str, Any]:
    body = body or ActorBody()
    inc = store.incident(incident_id)
    if inc.status is IncidentStatus.RESOLVED:
        raise Conflict(f"incident {incident_id} is resolved; nothing to acknowledge")
    inc, entry = lifecycle.acknowledge(inc, time.time(), f"acknowledged by {body.actor}"
                                       + (f": {body.note}" if body.note else ""), actor=body.actor)
    store.save_incident(inc, [entry])
    return inc.to_dict()


@router.post("/{incident_id}/resolve")
def resolve(incident_id: str, store: StoreDep, body: ActorBody | None = None) -> dict[str, Any]:
    body = body or ActorBody()
    inc = store.incident(incident_id)
    if inc.status is IncidentStatus.RESOLVED:
        return inc.to_dict()   # idempotent
    inc, entry = lifecycle.resolve(inc, time.time(), f"resolved by {body.actor}" + (f": {body.note}" if body.note else ""),
                              actor=body.actor)
    store.save_incident(inc, [entry])
    return inc.to_dict()


@router.post("/{incident_id}/actions/{action_id}/approve")
def approve(incident_id: str, action_id: str, runtime: RuntimeDep, body: ActorBody | None = None) -> dict[str, Any]:
    _check_owner(runtime, incident_id, action_id)
    return runtime.remediator.approve(action_id, (body or ActorBody()).actor).to_dict()


@router.post("/{incident_id}/actions/{action_id}/deny")
def deny(incident_id: str, action_id: str, runtime: RuntimeDep, body: ActorBody | None = None) -> dict[str, Any]:
    _check_owner(runtime, incident_id, action_id)
    return runtime.remediator.deny(action_id, (body or ActorBody()).actor).to_dict()


def _check_owner(runtime: Any, incident_id: str, action_id: str) -> None:
    from incidentd.errors import NotFound

    runtime.store.incident(incident_id)
    if runtime.store.action(action_id).incident_id != incident_id:
        raise NotFound(f"action {action_id} does not belong to incident {incident_id}")
