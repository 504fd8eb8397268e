"""Approval that stays safe: plans expire, approving re-runs the policy on the current diagnosis, an optional
second person, and change events nobody authenticated never start an action on their own.

The runner calls these pure functions; they read records and return decisions, and never execute anything.

    >>> rules = ApprovalRules(timeout_seconds=60)
    >>> rules.expired(created_at=0.0, now=61.0)
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diagnosis.types import Evidence, EvidenceKind, Hypothesis
from remediation.policy import Decision, Policy
from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus


@dataclass(frozen=True, slots=True)
class ApprovalRules:
    timeout_seconds: float = 3600.0
    two_person: bool = False

    def expired(self, created_at: float, now: float) -> bool:
        return now - created_at >= self.timeout_seconds


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    """The answer to an approval: run it now, wait for another approver, or refuse (with the reason)."""

    allowed: bool
    reason: str
    needs_another: bool = False
    expired: bool = False


def requested_by(rec: ActionRecord) -> str:
    """The identity that requested the plan: the actor of its first audit entry (``incidentd`` when automatic)."""
    return rec.audit[0].actor if rec.audit else "incidentd"


def approvers(rec: ActionRecord) -> list[str]:
    return [a.actor for a in rec.audit if a.event == "approval_recorded"]


def check_approval(policy: Policy, rules: ApprovalRules, rec: ActionRecord, current: list[Hypothesis],
                   escalated: bool, incident_actions: list[ActionRecord], model_actions: list[ActionRecord],
                   actor: str, now: float) -> ApprovalCheck:
    """Whether ``actor`` approving ``rec`` now may execute it.

    The policy is decided again as if the plan were new (the plan itself left out of the in-flight and
    per-incident counts), with the confidence of the same root cause in the *current* diagnosis.
    """
    if rec.status is not ActionStatus.AWAITING_APPROVAL:
        return ApprovalCheck(False, f"action is {rec.status.value}, not awaiting approval")
    if rules.expired(rec.created_at, now):
        return ApprovalCheck(False, f"plan expired: unanswered for {rules.timeout_seconds:g}s", expired=True)
    if rules.two_person:
        if actor == requested_by(rec):
            return ApprovalCheck(False, f"two-person approval: {actor} requested this plan and cannot approve it")
        if actor in approvers(rec):
            return ApprovalCheck(False, f"two-person approval: {actor} already approved; another person must")
    same = next((h for h in current if h.root_cause == rec.root_cause), None) if rec.root_cause else \
        (current[0] if current else None)
    if same is None:
        return ApprovalCheck(False, f"the diagnosis changed: {rec.root_cause or 'the root cause'} is no longer "
                                    "among the hypotheses")
    if current and current[0].root_cause != same.root_cause:
        return ApprovalCheck(False, f"the diagnosis changed: the top hypothesis is now {current[0].root_cause}")
    others = [a for a in incident_actions if a.id != rec.id]
    others_model = [a for a in model_actions if a.id != rec.id]
    decision = policy.decide(rec.kind, same.confidence, others, others_model, escalated, now,
                             root_cause=rec.root_cause or None)
    if not decision.allowed:
        return ApprovalCheck(False, f"policy refuses now: {decision.reason}")
    if rules.two_person and len(approvers(rec)) < 1:
        return ApprovalCheck(False, "first of two approvals recorded; a second person must approve",
                             needs_another=True)
    return ApprovalCheck(True, "allowed")


def unauthenticated_changes(evidence: list[Evidence]) -> list[Evidence]:
    """Change events among ``evidence`` that arrived without an authenticated identity."""
    return [e for e in evidence if e.kind is EvidenceKind.CHANGE and e.attributes.get("authenticated") is False]


def without_unauthenticated_trigger(decision: Decision, kind: ActionKind, evidence: list[Evidence]) -> Decision:
    """An automatic action that rests on an unauthenticated change event waits for a person instead."""
    if not decision.allowed or decision.mode is not ActionMode.AUTO:
        return decision
    anon = unauthenticated_changes(evidence)
    if not anon:
        return decision
    return Decision(True, ActionMode.APPROVE, f"{kind.value} rests on an unauthenticated change event "
                                              f"({anon[0].name} at {anon[0].at:.0f}): a person approves it")


def expiry_entry_data(rec: ActionRecord) -> dict[str, Any]:
    return {"action_id": rec.id, "requested_by": requested_by(rec)}
