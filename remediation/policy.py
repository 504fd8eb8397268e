"""The safety policy: whether an action may run now, and how (auto, approve, dry-run, never)."""
from __future__ import annotations

from dataclasses import dataclass, field

from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    mode: ActionMode
    reason: str


@dataclass(frozen=True, slots=True)
class Policy:
    """Guards every action. Defaults are conservative: one action at a time, cooldowns, a cap per incident.

        >>> Policy(modes={ActionKind.RESTART: ActionMode.APPROVE}).mode_for(ActionKind.RESTART)
        <ActionMode.APPROVE: 'approve'>
    """

    default_mode: ActionMode = ActionMode.AUTO
    modes: dict[ActionKind, ActionMode] = field(default_factory=dict)
    cooldown_seconds: float = 300.0          # per model and action kind
    max_actions_per_incident: int = 2
    verify_seconds: float = 120.0
    min_confidence: float = 0.6

    def mode_for(self, kind: ActionKind) -> ActionMode:
        return self.modes.get(kind, self.default_mode)

    def decide(self, kind: ActionKind, confidence: float, incident_actions: list[ActionRecord],
               model_actions: list[ActionRecord], escalated: bool, now: float) -> Decision:
        mode = self.mode_for(kind)
        if mode is ActionMode.NEVER:
            return Decision(False, mode, f"policy says never {kind.value}")
        if escalated:
            return Decision(False, mode, "incident escalated after a failed remediation: a person decides now")
        if confidence < self.min_confidence:
            return Decision(False, mode, f"confidence {confidence:.2f} below {self.min_confidence:.2f}")
        if any(a.status.in_flight for a in model_actions):
            return Decision(False, mode, "another action on this model is still in flight")
        executed = [a for a in incident_actions if a.status not in (ActionStatus.DENIED, ActionStatus.DRY_RUN)]
        if len(executed) >= self.max_actions_per_incident:
            return Decision(False, mode, f"already {len(executed)} actions on this incident "
                                         f"(max {self.max_actions_per_incident})")
        recent = [a for a in model_actions if a.kind is kind and a.executed_at is not None
                  and now - a.executed_at < self.cooldown_seconds]
        if recent:
            wait = self.cooldown_seconds - (now - recent[-1].executed_at)
            return Decision(False, mode, f"{kind.value} cooldown: {wait:.0f}s left")
        return Decision(True, mode, "allowed")
