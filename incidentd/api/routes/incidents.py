"""GET /incidents, GET /incidents/{id}, ack, resolve, comment, action approval.

Who did it is the authenticated identity (see incidentd/api/deps.py), never a field of the body.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from diagnosis import lifecycle
from diagnosis.types import IncidentStatus, TimelineEntry, TimelineKind
from incidentd.api.deps import Approver, Reader, Responder, RuntimeDep, StoreDep
from incidentd.api.responses import MUTATE, READ, READ_ONE
from incidentd.auth.scopes import Identity
from incidentd.errors import Conflict, NotFound

router = APIRouter(prefix="/incidents", tags=["incidents"])

IncidentId = Annotated[str, Path(min_length=1, max_length=100)]
ActionId = Annotated[str, Path(min_length=1, max_length=100)]


class NoteBody(BaseModel):
    """An optional note for the timeline. The actor is the authenticated identity, not a body field."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=2000)


def _said(who: Identity, verb: str, note: str) -> str:
    return f"{verb} by {who.label}" + (f": {note}" if note else "")


def _with_identity(entry: TimelineEntry, who: Identity) -> TimelineEntry:
    """The entry with the full authenticated identity (actor, method, authenticated) in its data."""
    return replace(entry, data={**entry.data, **who.audit()})


@router.get("", responses=READ)
def list_incidents(store: StoreDep, who: Reader, status: IncidentStatus | None = None,
                   model: Annotated[str | None, Query(max_length=200)] = None,
                   limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    incs = store.incidents(status=status, model=model, limit=limit)
    return {"incidents": [i.to_dict() for i in incs], "count": len(incs)}


@router.get("/{incident_id}", responses=READ_ONE)
def get_incident(incident_id: IncidentId, store: StoreDep, who: Reader) -> dict[str, Any]:
    inc = store.incident(incident_id)
    return {**inc.to_dict(),
            "evidence": [e.to_dict() for e in store.evidence(inc.evidence_ids)],
            "actions": [a.to_dict() for a in store.actions(incident_id=inc.id)],
            "timeline": [t.to_dict() for t in store.timeline(inc.id)]}


@router.get("/{incident_id}/plot.png", response_class=Response, responses={
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The incident's signals around its onset."}, **READ_ONE})
def incident_plot(incident_id: IncidentId, runtime: RuntimeDep, who: Reader) -> Response:
    from incidentd.plots import render_incident

    inc = runtime.store.incident(incident_id)
    png = render_incident(inc, runtime.store, runtime.source, runtime.settings.scrape_interval_seconds)
    return Response(png, media_type="image/png")


@router.post("/{incident_id}/ack", responses=MUTATE)
def ack(incident_id: IncidentId, store: StoreDep, who: Responder, body: NoteBody | None = None) -> dict[str, Any]:
    body = body or NoteBody(note="")
    inc = store.incident(incident_id)
    if inc.status is IncidentStatus.RESOLVED:
        raise Conflict(f"incident {incident_id} is resolved; nothing to acknowledge")
    inc, entry = lifecycle.acknowledge(inc, time.time(), _said(who, "acknowledged", body.note), actor=who.label)
    store.save_incident(inc, [_with_identity(entry, who)])
    return inc.to_dict()


@router.post("/{incident_id}/resolve", responses=MUTATE)
def resolve(incident_id: IncidentId, store: StoreDep, who: Responder,
            body: NoteBody | None = None) -> dict[str, Any]:
    body = body or NoteBody(note="")
    inc = store.incident(incident_id)
    if inc.status is IncidentStatus.RESOLVED:
        return inc.to_dict()   # idempotent
    inc, entry = lifecycle.resolve(inc, time.time(), _said(who, "resolved", body.note), actor=who.label)
    entry = _with_identity(entry, who)
    store.save_incident(inc, [entry])
    return inc.to_dict()


@router.post("/{incident_id}/comments", responses=MUTATE)
def comment(incident_id: IncidentId, body: CommentBody, store: StoreDep, who: Responder) -> dict[str, Any]:
    store.incident(incident_id)
    entry = TimelineEntry(time.time(), TimelineKind.COMMENT, f"{who.label}: {body.note}", who.audit())
    store.append_timeline(incident_id, entry)
    return entry.to_dict()


@router.post("/{incident_id}/actions/{action_id}/approve", responses=MUTATE)
def approve(incident_id: IncidentId, action_id: ActionId, runtime: RuntimeDep, who: Approver,
            body: NoteBody | None = None) -> dict[str, Any]:
    _check_owner(runtime, incident_id, action_id)
    return runtime.remediator.approve(action_id, who.label).to_dict()


@router.post("/{incident_id}/actions/{action_id}/deny", responses=MUTATE)
def deny(incident_id: IncidentId, action_id: ActionId, runtime: RuntimeDep, who: Approver,
         body: NoteBody | None = None) -> dict[str, Any]:
    _check_owner(runtime, incident_id, action_id)
    return runtime.remediator.deny(action_id, who.label).to_dict()


def _check_owner(runtime: Any, incident_id: str, action_id: str) -> None:
    runtime.store.incident(incident_id)
    if runtime.store.action(action_id).incident_id != incident_id:
        raise NotFound(f"action {action_id} does not belong to incident {incident_id}")

