"""Types of remediation: what an action is, how it may run, and what became of it."""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from detectors.errors import Conflict, IncidentdError
from diagnosis.types import ActionKind

__all__ = ["ActionKind", "ActionMode", "ActionStatus", "ActionFailed", "NotAwaitingApproval", "ApprovalRefused",
           "Plan", "ActionResult", "AuditEvent", "ActionRecord", "Applied", "Readback"]


class ActionMode(enum.StrEnum):
    AUTO = "auto"          # execute, then verify
    APPROVE = "approve"    # show the plan on the incident; a person approves or denies through the API
    DRY_RUN = "dry-run"    # plan and simulate only
    NEVER = "never"


class ActionStatus(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    DENIED = "denied"
    EXPIRED = "expired"              # awaited approval past the approval timeout; blocks nothing (issue 12)
    EXECUTING = "executing"
    VERIFYING = "verifying"
    VERIFIED = "verified"            # executed and the signals recovered
    NOT_RECOVERED = "not_recovered"  # executed, the signals did not recover: escalated
    REVERTED = "reverted"            # executed, new symptoms appeared: undone and escalated
    FAILED = "failed"                # execution failed
    DRY_RUN = "dry_run"
    NOOP = "noop"                    # nothing to do (e.g. already on the known-good version)

    @property
    def in_flight(self) -> bool:
        return self in (ActionStatus.EXECUTING, ActionStatus.VERIFYING, ActionStatus.AWAITING_APPROVAL)

    @property
    def executed(self) -> bool:
        """The action ran (or is running), or found nothing to do; not a plan simulated, denied, waiting or expired."""
        return self not in (ActionStatus.DRY_RUN, ActionStatus.DENIED, ActionStatus.AWAITING_APPROVAL,
                            ActionStatus.EXPIRED)

    @property
    def finished(self) -> bool:
        """A verdict was reached on an executed action."""
        return self in (ActionStatus.VERIFIED, ActionStatus.NOT_RECOVERED, ActionStatus.FAILED,
                        ActionStatus.REVERTED)


class ActionFailed(IncidentdError):
    """An action could not be executed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class NotAwaitingApproval(Conflict):
    """Approving or denying an action that is not waiting for an answer."""


class ApprovalRefused(Conflict):
    """An approval that cannot run the plan: it expired, or the policy refuses it on the current diagnosis."""


@dataclass(frozen=True, slots=True)
class Plan:
    kind: ActionKind
    target: str                 # what is acted on, never empty or a wildcard
    params: Mapping[str, Any]
    description: str
    noop: bool = False          # the target is already in the desired state

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "target": self.target, "params": dict(self.params),
                "description": self.description, "noop": self.noop}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        return cls(ActionKind(d["kind"]), d["target"], dict(d.get("params") or {}), d.get("description", ""),
                   bool(d.get("noop", False)))


class Applied(enum.StrEnum):
    """Whether the server shows a planned change applied, read back after the fact."""

    DONE = "done"
    NOT_DONE = "not_done"
    UNKNOWN = "unknown"      # the server could not be read, or cannot say (no instance identity)


@dataclass(frozen=True, slots=True)
class Readback:
    """What the server showed when asked whether a plan took effect (see ``Action.readback``).

        >>> Readback(Applied.DONE, {"serving": "v1"}, "the server serves v1, the plan's target").done
        True
    """

    applied: Applied
    shown: Mapping[str, Any]     # what the server showed, for the audit trail
    summary: str                 # one line a person reads on the timeline

    @property
    def done(self) -> bool:
        return self.applied is Applied.DONE

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied.value, "shown": dict(self.shown), "summary": self.summary}


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What running (or simulating, or undoing) an action gave: the executor's report, or the error."""

    data: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: str, retryable: bool = False) -> ActionResult:
        return cls({}, error, retryable)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error, "retryable": self.retryable}
        return dict(self.data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionResult:
        if "error" in d:
            return cls({}, str(d["error"]), bool(d.get("retryable", False)))
        return cls(dict(d))


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    event: str
    actor: str = "incidentd"
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "event": self.event, "actor": self.actor, **self.data}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEvent:
        rest = {k: v for k, v in d.items() if k not in ("at", "event", "actor")}
        return cls(float(d["at"]), str(d["event"]), str(d.get("actor", "incidentd")), rest)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """The persisted audit record of one action, from plan to verdict. Immutable: changes return a new one."""

    id: str
    incident_id: str
    model: str
    kind: ActionKind
    mode: ActionMode
    status: ActionStatus
    reason: str                          # why it was chosen: root cause, confidence, rule
    idempotency_key: str
    created_at: float
    plan: Plan | None = None             # None when the action could not be planned
    executed_at: float | None = None
    verify_deadline: float | None = None
    verified_at: float | None = None
    result: ActionResult | None = None
    verify_signals: tuple[str, ...] = ()
    root_cause: str = ""                 # the diagnosis acted on (flapping is counted per root cause)
    # verify signals another simultaneous cause also moves: a rollback judges them by version (what the
    # version lost), never against a baseline the other cause (a data shift) still holds down
    shared_signals: tuple[str, ...] = ()
    # since when verification has had no fresh data for any of its signals (None: it has data, or has not
    # looked yet). Such an action does not hold back another cause's fix: that fix may bring the data back.
    awaiting_data_since: float | None = None
    audit: tuple[AuditEvent, ...] = ()

    def blocks(self, root_cause: str | None) -> bool:
        """Whether this action keeps an action for ``root_cause`` on the same model from starting: while it is
        in flight, unless it is only waiting for data to verify on and the other action is for another cause."""
        if not self.status.in_flight:
            return False
        waiting = self.status is ActionStatus.VERIFYING and self.awaiting_data_since is not None
        return not (waiting and root_cause is not None and root_cause not in ("", self.root_cause))

    @property
    def target(self) -> str:
        return self.plan.target if self.plan is not None else ""

    def logged(self, at: float, event: str, actor: str = "incidentd", **data: Any) -> ActionRecord:
        """This record with one more audit event."""
        return replace(self, audit=(*self.audit, AuditEvent(at, event, actor, data)))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "incident_id": self.incident_id, "model": self.model, "kind": self.kind.value,
                "mode": self.mode.value, "status": self.status.value, "target": self.target,
                "plan": self.plan.to_dict() if self.plan is not None else {}, "reason": self.reason,
                "idempotency_key": self.idempotency_key, "created_at": self.created_at,
                "executed_at": self.executed_at, "verify_deadline": self.verify_deadline,
                "verified_at": self.verified_at, "result": self.result.to_dict() if self.result else {},
                "verify_signals": list(self.verify_signals), "root_cause": self.root_cause,
                "shared_signals": list(self.shared_signals), "awaiting_data_since": self.awaiting_data_since,
                "audit": [a.to_dict() for a in self.audit]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionRecord:
        return cls(id=d["id"], incident_id=d["incident_id"], model=d["model"], kind=ActionKind(d["kind"]),
                   mode=ActionMode(d["mode"]), status=ActionStatus(d["status"]), reason=d.get("reason", ""),
                   idempotency_key=d.get("idempotency_key", ""), created_at=float(d["created_at"]),
                   plan=Plan.from_dict(d["plan"]) if d.get("plan") else None,
                   executed_at=d.get("executed_at"), verify_deadline=d.get("verify_deadline"),
                   verified_at=d.get("verified_at"),
                   result=ActionResult.from_dict(d["result"]) if d.get("result") else None,
                   verify_signals=tuple(d.get("verify_signals") or ()), root_cause=d.get("root_cause", ""),
                   shared_signals=tuple(d.get("shared_signals") or ()),
                   awaiting_data_since=d.get("awaiting_data_since"),
                   audit=tuple(AuditEvent.from_dict(a) for a in d.get("audit") or ()))
