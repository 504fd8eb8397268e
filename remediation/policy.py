"""The safety policy: whether an action may run now, and how (auto, approve, dry-run, never)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    mode: ActionMode
    reason: str
    escalate: bool = False    # stop acting on this model and hand the incident to a person


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
    max_actions_per_window: int = 6          # per model, all kinds together, in rate_window
    rate_window_seconds: float = 3600.0
    flap_limit: int = 3                      # same kind for the same root cause on the same model this
                                             # often in flap_window: flapping
    flap_window_seconds: float = 3600.0
    max_failed: int = 2                      # failed or unverified remediations in flap_window: stop
    # A cooldown with longer than this still to run while the fault is active outlasts what the fault can be
    # left alone for: a person hears of it at once rather than when the cooldown ends.
    cooldown_escalate_after_seconds: float = 120.0
    revert_on_worse: bool = True             # undo an action after which new symptoms appear

    def mode_for(self, kind: ActionKind) -> ActionMode:
        return self.modes.get(kind, self.default_mode)

    def decide(self, kind: ActionKind, confidence: float, incident_actions: Sequence[ActionRecord],
               model_actions: Sequence[ActionRecord], escalated: bool, now: float,
               root_cause: str | None = None) -> Decision:
        mode = self.mode_for(kind)
        if mode is ActionMode.NEVER:
            return Decision(False, mode, f"policy says never {kind.value}")
        if escalated:
            return Decision(False, mode, "incident escalated after a failed remediation: a person decides now")
        if confidence < self.min_confidence:
            return Decision(False, mode, f"confidence {confidence:.2f} below {self.min_confidence:.2f}")
        if any(a.blocks(root_cause) for a in model_actions):
            return Decision(False, mode, "another action on this model is still in flight")
        executed = [a for a in incident_actions
                    if a.status not in (ActionStatus.DENIED, ActionStatus.DRY_RUN, ActionStatus.EXPIRED)]
        if len(executed) >= self.max_actions_per_incident:
            # The fault is still there and incidentd may not act again: a person must hear of it (issue 11).
            return Decision(False, mode, f"cap per incident: already {len(executed)} actions on this incident "
                                         f"(max {self.max_actions_per_incident})", escalate=True)
        window = [a for a in model_actions if a.executed_at is not None
                  and now - a.executed_at < self.flap_window_seconds]
        failed = [a for a in window if a.status in (ActionStatus.FAILED, ActionStatus.NOT_RECOVERED,
                                                    ActionStatus.REVERTED)]
        if len(failed) >= self.max_failed:
            return Decision(False, mode, f"{len(failed)} remediations on this model failed or did not recover "
                                         f"in the last {self.flap_window_seconds:g}s: a person decides", escalate=True)
        same = [a for a in window if a.kind is kind]
        # Flapping is the same fix for the same problem again and again (the fault keeps coming back);
        # different faults that each needed a restart are what the rate limit is for.
        again = [a for a in same if root_cause is None or a.root_cause in ("", root_cause)]
        if len(again) >= self.flap_limit:
            why = f" for {root_cause}" if root_cause else ""
            return Decision(False, mode, f"flapping: {kind.value} ran {len(again)} times{why} on this model in the "
                                         f"last {self.flap_window_seconds:g}s; fixing the symptom again would hide "
                                         "the cause", escalate=True)
        recent_all = [a for a in model_actions if a.executed_at is not None
                      and now - a.executed_at < self.rate_window_seconds]
        if len(recent_all) >= self.max_actions_per_window:
            return Decision(False, mode, f"rate limit: {len(recent_all)} actions on this model in the last "
                                         f"{self.rate_window_seconds:g}s (max {self.max_actions_per_window})",
                            escalate=True)
        recent = [t for a in same if (t := a.executed_at) is not None and now - t < self.cooldown_seconds]
        if recent:
            wait = self.cooldown_seconds - (now - recent[-1])
            if wait > self.cooldown_escalate_after_seconds:
                return Decision(False, mode, f"{kind.value} cooldown: {wait:.0f}s left (it ran "
                                             f"{now - recent[-1]:.0f}s ago), longer than the fault may wait "
                                             f"({self.cooldown_escalate_after_seconds:g}s)", escalate=True)
            return Decision(False, mode, f"{kind.value} cooldown: {wait:.0f}s left")
        return Decision(True, mode, "allowed")
