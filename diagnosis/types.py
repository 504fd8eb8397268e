"""The types diagnosis reasons over and produces: Evidence, Hypothesis, Incident and its timeline."""
from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class FaultDomain(enum.StrEnum):
    MODEL = "model"
    DATA = "data"
    HARDWARE = "hardware"


class EvidenceKind(enum.StrEnum):
    ANOMALY = "anomaly"
    ALERT = "alert"
    CHANGE = "change"


class ChangeKind(enum.StrEnum):
    DEPLOY = "deploy"                  # a version switch nobody in incidentd asked for
    VERSION_SWITCH = "version_switch"  # reported by a pipeline without saying deploy or rollback
    ROLLBACK = "rollback"              # a version switch incidentd made
    RESTART = "restart"
    CONFIG_CHANGE = "config_change"


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class ActionKind(enum.StrEnum):
    """What a hypothesis recommends; every kind but NOTIFY is an action remediation can run."""

    CLAMP = "clamp"
    ROLLBACK = "rollback"
    RESTART = "restart"
    NOTIFY = "notify"      # open the incident and tell people; change nothing on the model

    @property
    def changes_model(self) -> bool:
        return self is not ActionKind.NOTIFY


class TimelineKind(enum.StrEnum):
    """What an incident timeline entry records."""

    OPENED = "opened"
    HYPOTHESES = "hypotheses"
    ACKNOWLEDGED = "acknowledged"
    MITIGATED = "mitigated"
    CAUSE_FIXED = "cause_fixed"        # one cause's fix verified while another cause remains
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    COMMENT = "comment"              # a person's note (POST /incidents/{id}/comments)
    ACTION_BLOCKED = "action_blocked"
    ACTION_FAILED = "action_failed"
    ACTION_NOOP = "action_noop"
    ACTION_DRY_RUN = "action_dry_run"
    ACTION_AWAITING_APPROVAL = "action_awaiting_approval"
    ACTION_STARTED = "action_started"
    ACTION_APPROVED = "action_approved"
    ACTION_DENIED = "action_denied"
    ACTION_EXECUTED = "action_executed"
    ACTION_RECONCILED = "action_reconciled"
    ACTION_APPROVAL_RECORDED = "action_approval_recorded"   # first of two approvals (issue 12)
    ACTION_APPROVAL_REFUSED = "action_approval_refused"     # approval refused on re-check (issue 12)
    ACTION_EXPIRED = "action_expired"                       # plan unanswered past the timeout (issue 12)
    # no data to verify on while another cause holds it back: verification waits longer (issue 15)
    ACTION_VERIFICATION_EXTENDED = "action_verification_extended"
    REOPENED = "reopened"             # a mitigated incident's fault came back after its fix was verified


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One thing diagnosis knows: an anomaly episode on a signal, an alert, or a change event."""

    id: str
    kind: EvidenceKind
    model: str
    name: str                    # signal name (anomaly), alertname (alert) or change kind (change)
    at: float                    # onset / startsAt / when the change happened
    summary: str
    score: float = 1.0
    ended_at: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        return cls(**{**d, "kind": EvidenceKind(d["kind"])})


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """A ranked explanation of a fault: where it is, why, how sure, and what to do."""

    domain: FaultDomain
    root_cause: str
    confidence: float
    recommended_action: ActionKind
    explanation: str
    evidence_ids: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    explains: tuple[str, ...] = ()        # the incident's symptoms (signal names) this cause accounts for
    alternative_to: tuple[str, ...] = ()  # higher-ranked root causes resting on the same symptoms
    discounts: tuple[str, ...] = ()       # evidence that made it less likely, and by how much
    affects: tuple[str, ...] = ()         # every signal this cause moves, active now or not (its rules' own
                                          # signals and what they declare it produces)

    @property
    def simultaneous(self) -> bool:
        """A cause of its own (no higher-ranked hypothesis rests on its symptoms), not an alternative."""
        return not self.alternative_to

    def __post_init__(self) -> None:
        # An action named by its string ("clamp") is accepted and checked here; an unknown one is an error.
        if not isinstance(self.recommended_action, ActionKind):
            try:
                kind = ActionKind(self.recommended_action)
            except ValueError:
                raise ValueError(f"unknown recommended_action {self.recommended_action!r}; "
                                 f"known: {', '.join(k.value for k in ActionKind)}") from None
            object.__setattr__(self, "recommended_action", kind)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["domain"] = self.domain.value
        d["recommended_action"] = self.recommended_action.value
        d["evidence_ids"] = list(self.evidence_ids)
        d["rules"] = list(self.rules)
        d["explains"] = list(self.explains)
        d["alternative_to"] = list(self.alternative_to)
        d["discounts"] = list(self.discounts)
        d["affects"] = list(self.affects)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hypothesis:
        return cls(domain=FaultDomain(d["domain"]), root_cause=d["root_cause"],
                   confidence=float(d["confidence"]), recommended_action=ActionKind(d["recommended_action"]),
                   explanation=d["explanation"], evidence_ids=tuple(d.get("evidence_ids", ())),
                   rules=tuple(d.get("rules", ())), explains=tuple(d.get("explains", ())),
                   alternative_to=tuple(d.get("alternative_to", ())), discounts=tuple(d.get("discounts", ())),
                   affects=tuple(d.get("affects", ())))


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float
    kind: TimelineKind
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind.value, "message": self.message, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimelineEntry:
        return cls(float(d["at"]), TimelineKind(d["kind"]), d["message"], dict(d.get("data") or {}))


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident: one per model fault episode, with ranked hypotheses and an append-only timeline."""

    id: str
    model: str
    dedup_key: str
    status: IncidentStatus
    severity: Severity
    opened_at: float
    updated_at: float
    title: str = ""
    resolved_at: float | None = None
    mitigated_at: float | None = None
    hypotheses: tuple[Hypothesis, ...] = ()
    evidence_ids: tuple[str, ...] = ()
    action_ids: tuple[str, ...] = ()
    escalated: bool = False

    def with_action(self, action_id: str) -> Incident:
        """This incident with one more action on it (an id already there is not added twice)."""
        if action_id in self.action_ids:
            return self
        return replace(self, action_ids=(*self.action_ids, action_id))

    @property
    def top(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None

    @property
    def causes(self) -> tuple[Hypothesis, ...]:
        """The simultaneous causes: ranked hypotheses that are not an alternative to a higher-ranked one."""
        return tuple(h for h in self.hypotheses if h.simultaneous)

    @property
    def active(self) -> bool:
        return self.status is not IncidentStatus.RESOLVED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "dedup_key": self.dedup_key, "status": self.status.value,
            "severity": self.severity.value, "opened_at": self.opened_at, "updated_at": self.updated_at,
            "title": self.title, "resolved_at": self.resolved_at, "mitigated_at": self.mitigated_at,
            "hypotheses": [h.to_dict() for h in self.hypotheses], "evidence_ids": list(self.evidence_ids),
            "action_ids": list(self.action_ids), "escalated": self.escalated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        return cls(id=d["id"], model=d["model"], dedup_key=d["dedup_key"], status=IncidentStatus(d["status"]),
                   severity=Severity(d["severity"]), opened_at=d["opened_at"], updated_at=d["updated_at"],
                   title=d.get("title", ""), resolved_at=d.get("resolved_at"), mitigated_at=d.get("mitigated_at"),
                   hypotheses=tuple(Hypothesis.from_dict(h) for h in d.get("hypotheses", [])),
                   evidence_ids=tuple(d.get("evidence_ids", [])), action_ids=tuple(d.get("action_ids", [])),
                   escalated=bool(d.get("escalated", False)))
