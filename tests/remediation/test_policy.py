"""The safety policy: cooldowns, caps, modes and escalation decide whether an action may run."""
from __future__ import annotations

from remediation.policy import Policy
from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus


def rec(kind=ActionKind.RESTART, status=ActionStatus.VERIFIED, executed_at=100.0, incident="inc-1", root_cause=""):
    return ActionRecord(id=f"act-{executed_at}", incident_id=incident, model="digits", kind=kind,
                        mode=ActionMode.AUTO, status=status, reason="r",
                        idempotency_key="k", created_at=executed_at, executed_at=executed_at, root_cause=root_cause)


def test_allowed_by_default():
    d = Policy().decide(ActionKind.ROLLBACK, 0.9, [], [], escalated=False, now=1000.0)
    assert d.allowed and d.mode is ActionMode.AUTO


def test_never_mode_and_low_confidence_block():
    p = Policy(modes={ActionKind.RESTART: ActionMode.NEVER}, min_confidence=0.6)
    assert not p.decide(ActionKind.RESTART, 0.99, [], [], False, 0.0).allowed
    d = p.decide(ActionKind.CLAMP, 0.5, [], [], False, 0.0)
    assert not d.allowed and "confidence" in d.reason


def test_cooldown_per_model_and_kind():
    p = Policy(cooldown_seconds=300)
    earlier = [rec(executed_at=1000.0, incident="inc-0")]
    d = p.decide(ActionKind.RESTART, 0.9, [], earlier, False, now=1100.0)
    assert not d.allowed and "cooldown" in d.reason and "200s" in d.reason
    assert p.decide(ActionKind.RESTART, 0.9, [], earlier, False, now=1301.0).allowed
    assert p.decide(ActionKind.ROLLBACK, 0.9, [], earlier, False, now=1100.0).allowed


def test_a_cooldown_that_outlasts_the_fault_escalates_naming_the_guard():
    p = Policy(cooldown_seconds=300, cooldown_escalate_after_seconds=120)
    earlier = [rec(executed_at=1000.0, incident="inc-0")]
    long_wait = p.decide(ActionKind.RESTART, 0.9, [], earlier, False, now=1100.0)
    assert not long_wait.allowed and long_wait.escalate and "restart cooldown: 200s left" in long_wait.reason
    # A cooldown about to end is waited out: the action runs when it ends, nobody is paged.
    short_wait = p.decide(ActionKind.RESTART, 0.9, [], earlier, False, now=1250.0)
    assert not short_wait.allowed and not short_wait.escalate and "50s left" in short_wait.reason


def test_cap_per_incident_and_one_action_in_flight():
    p = Policy(max_actions_per_incident=2, cooldown_seconds=0)
    two = [rec(ActionKind.CLAMP), rec(ActionKind.ROLLBACK, executed_at=200.0)]
    capped = p.decide(ActionKind.RESTART, 0.9, two, two, False, 1000.0)
    # The fault is still active and incidentd may not act: a person hears of it, named by the guard.
    assert not capped.allowed and capped.escalate and "cap per incident" in capped.reason
    flying = [rec(ActionKind.CLAMP, status=ActionStatus.VERIFYING)]
    d = p.decide(ActionKind.ROLLBACK, 0.9, [], flying, False, 1000.0)
    assert not d.allowed and "in flight" in d.reason


def test_an_action_waiting_for_data_lets_another_causes_fix_run_but_not_a_second_fix_of_its_own():
    from dataclasses import replace

    p = Policy(cooldown_seconds=0)
    rollback = rec(ActionKind.ROLLBACK, status=ActionStatus.VERIFYING, root_cause="model.bad_version")
    waiting = replace(rollback, awaiting_data_since=130.0)
    # the starved server answers too few requests to verify the rollback: the restart that ends the
    # starvation may start; while the rollback has data to be judged on, it may not
    assert p.decide(ActionKind.RESTART, 0.9, [waiting], [waiting], False, 1000.0,
                    root_cause="hardware.cpu_contention").allowed
    assert not p.decide(ActionKind.RESTART, 0.9, [rollback], [rollback], False, 1000.0,
                        root_cause="hardware.cpu_contention").allowed
    # the same cause, or an action that names no cause, still waits for the verdict
    assert not p.decide(ActionKind.CLAMP, 0.9, [waiting], [waiting], False, 1000.0,
                        root_cause="model.bad_version").allowed
    assert not p.decide(ActionKind.RESTART, 0.9, [waiting], [waiting], False, 1000.0).allowed


def test_escalated_incident_stops_acting():
    d = Policy().decide(ActionKind.RESTART, 0.99, [], [], escalated=True, now=0.0)
    assert not d.allowed and "escalated" in d.reason


def test_approve_mode_is_reported():
    d = Policy(default_mode=ActionMode.APPROVE).decide(ActionKind.CLAMP, 0.9, [], [], False, 0.0)
    assert d.allowed and d.mode is ActionMode.APPROVE


def test_flapping_remediation_stops_and_escalates():
    p = Policy(cooldown_seconds=60, flap_limit=3, flap_window_seconds=3600)
    restarts = [rec(executed_at=t, incident=f"inc-{i}") for i, t in enumerate((100.0, 400.0, 700.0))]
    d = p.decide(ActionKind.RESTART, 0.95, [], restarts, False, now=1000.0)
    assert not d.allowed and d.escalate and "flapping" in d.reason
    assert p.decide(ActionKind.RESTART, 0.95, [], restarts, False, now=100.0 + 3601 + 600).allowed


def test_flapping_is_the_same_fix_for_the_same_root_cause():
    p = Policy(cooldown_seconds=60, flap_limit=3, flap_window_seconds=3600)
    restarts = [rec(executed_at=t, incident=f"inc-{i}", root_cause="hardware.process_crash")
                for i, t in enumerate((100.0, 400.0, 700.0))]
    d = p.decide(ActionKind.RESTART, 0.95, [], restarts, False, now=1000.0, root_cause="hardware.process_crash")
    assert not d.allowed and d.escalate and "for hardware.process_crash" in d.reason
    # three crashes fixed by restarts do not make a memory leak's first restart "flapping"
    assert p.decide(ActionKind.RESTART, 0.95, [], restarts, False, now=1000.0,
                    root_cause="hardware.memory_pressure").allowed


def test_repeated_failed_remediations_stop_and_escalate():
    p = Policy(cooldown_seconds=0, max_failed=2)
    failed = [rec(ActionKind.CLAMP, ActionStatus.NOT_RECOVERED, 100.0, "inc-1"),
              rec(ActionKind.ROLLBACK, ActionStatus.FAILED, 200.0, "inc-2")]
    d = p.decide(ActionKind.RESTART, 0.95, [], failed, False, now=300.0)
    assert not d.allowed and d.escalate and "failed" in d.reason


def test_rate_limit_per_model_per_hour():
    p = Policy(cooldown_seconds=0, max_actions_per_window=2, flap_limit=10)
    done = [rec(ActionKind.CLAMP, executed_at=100.0, incident="a"), rec(ActionKind.ROLLBACK, executed_at=200.0,
                                                                       incident="b")]
    d = p.decide(ActionKind.RESTART, 0.95, [], done, False, now=300.0)
    # A guard that stops incidentd acting on a fault still active escalates, naming itself (issue 11).
    assert not d.allowed and d.escalate and "rate limit" in d.reason
    assert Policy(cooldown_seconds=0, max_actions_per_window=2, flap_limit=10, rate_window_seconds=150).decide(
        ActionKind.RESTART, 0.95, [], done, False, now=300.0).allowed, "only actions inside the window count"
