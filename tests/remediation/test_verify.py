"""Verdicts on an executed action: recovered, not recovered by the deadline, or worse (a new harm signal)."""
from __future__ import annotations

from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus
from remediation.verify import Outcome, judge

REC = ActionRecord("act-1", "inc-1", "digits", ActionKind.ROLLBACK, ActionMode.AUTO, ActionStatus.VERIFYING,
                   "bad version", "inc-1:rollback", 90.0, executed_at=100.0, verify_deadline=220.0,
                   verify_signals=("accuracy",))


def answers(**by_name):
    return lambda name, since: by_name.get(name)


def verdict(recovered, active=None, now=150.0, revert=True):
    return judge(REC, recovered, {"accuracy", "error_rate", "input_drift"}, active or {}, now, grace=2.0,
                 verify_seconds=120.0, revert_on_worse=revert)


def test_recovered_signals_verify_and_missing_data_never_does():
    assert verdict(answers(accuracy=True)).outcome is Outcome.VERIFIED
    assert verdict(answers(accuracy=None)).outcome is Outcome.PENDING
    assert verdict(answers(accuracy=None), now=221.0).outcome is Outcome.NOT_RECOVERED
    assert verdict(answers(accuracy=False), now=221.0).signals == {"accuracy": False}


def test_a_new_harm_signal_after_the_action_is_worse_unless_reverting_is_off():
    active = {"error_rate": 140.0, "accuracy": 50.0}
    v = verdict(answers(accuracy=None, error_rate=False), active)
    assert v.outcome is Outcome.WORSE and v.worse == ("error_rate",)
    assert verdict(answers(accuracy=None, error_rate=False), active, revert=False).outcome is Outcome.PENDING
    # not a harm signal, started before the action, or healthy again after it settled: not worse
    assert verdict(answers(accuracy=None, input_drift=False), {"input_drift": 140.0}).outcome is Outcome.PENDING
    assert verdict(answers(accuracy=None, error_rate=False), {"error_rate": 99.0}).outcome is Outcome.PENDING
    assert verdict(answers(accuracy=None, error_rate=True), active).outcome is Outcome.PENDING
    # before a quarter of the verification window has passed, late labels may still be the fault's own
    assert verdict(answers(accuracy=None, error_rate=False), active, now=125.0).outcome is Outcome.PENDING
