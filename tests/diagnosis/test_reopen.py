"""A fault that returns after its fix was verified reopens the mitigated incident; lingering symptoms do not."""
from __future__ import annotations

from diagnosis import lifecycle
from diagnosis.types import ActionKind, FaultDomain, Hypothesis, IncidentStatus, TimelineKind

NONFINITE = Hypothesis(FaultDomain.MODEL, "model.nonfinite_weights", 0.95, ActionKind.CLAMP, "NaN weights",
                       ("ev-w",), ("nonfinite-weights",))


def _mitigated():
    inc, _ = lifecycle.open_incident("digits", [NONFINITE], ["ev-w"], 1000.0, [])
    inc, _ = lifecycle.mitigate(inc, 1100.0, "clamp verified")
    return inc


def test_the_same_fault_starting_after_the_fix_reopens_the_incident():
    inc = _mitigated()
    back = Hypothesis(FaultDomain.MODEL, "model.nonfinite_weights", 0.95, ActionKind.CLAMP, "NaN again",
                      ("ev-w2",), ("nonfinite-weights",))
    assert lifecycle.returned(inc, back, {"ev-w2": 1200.0})
    reopened, entry = lifecycle.reopen(inc, 1200.0, "back")
    assert reopened.status is IncidentStatus.OPEN and entry.kind is TimelineKind.REOPENED
    assert reopened.action_ids == inc.action_ids, "its history stays on it"


def test_lingering_symptoms_of_the_fixed_fault_do_not_reopen_it():
    inc = _mitigated()
    assert not lifecycle.returned(inc, NONFINITE, {"ev-w": 1000.0}), "an episode older than the fix"
    other = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.8, ActionKind.NOTIFY, "drift", ("ev-d",),
                       ("covariate-drift",))
    assert not lifecycle.returned(inc, other, {"ev-d": 1200.0}), "a different fault is a new incident"
    opened, _ = lifecycle.open_incident("digits", [NONFINITE], ["ev-w"], 1000.0, [])
    assert not lifecycle.returned(opened, NONFINITE, {"ev-w": 1200.0}), "only a mitigated incident reopens"
