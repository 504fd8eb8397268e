"""Types of remediation: what an action is, how it may run, and what became of it."""
from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from detectors.errors import IncidentdError


class ActionKind(enum.StrEnum):
    CLAMP = "clamp"
    ROLLBACK = "rollback"
    RESTART = "restart"


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


class ActionFailed(IncidentdError):
    """An action could not be executed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Plan:
    kind: ActionKind
    target: str                 # what is acted on, never empty or a wildcard
    params: dict[str, Any]
    description: str
    noop: bool = False          # the target is already in the desired state


@dataclass(slots=True)
class ActionRecord:
    """The persisted audit record of one action, from plan to verdict."""

    id: str
    incident_id: str
    model: str
    kind: ActionKind
    mode: ActionMode
    status: ActionStatus
    target: str
    plan: dict[str, Any]
    reason: str                          # why it was chosen: root cause, confidence, rule
    idempotency_key: str
    created_at: float = field(default_factory=time.time)
    executed_at: float | None = None
    verify_deadline: float | None = None
    verified_at: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    verify_signals: list[str] = field(default_factory=list)
    root_cause: str = ""                 # the diagnosis acted on (flapping is counted per root cause)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def log(self, event: str, actor: str = "incidentd", **data: Any) -> None:
        self.audit.append({"at": time.time(), "event": event, "actor": actor, **data})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"], d["mode"], d["status"] = self.kind.value, self.mode.value, self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionRecord:
        return cls(**{**d, "kind": ActionKind(d["kind"]), "mode": ActionMode(d["mode"]),
                      "status": ActionStatus(d["status"])})
