"""Incident lifecycle rules as pure functions: transitions return new incidents; which transition applies."""
from __future__ import annotations

import dataclasses

import pytest

from diagnosis import lifecycle
from diagnosis.types import (
    ActionKind,
    Evidence,
    EvidenceKind,
    FaultDomain,
    Hypothesis,
    IncidentStatus,
    Severity,
    TimelineKind,
)

DRIFT = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, ActionKind.NOTIFY, "drift",
                   evidence_ids=("ev-drift", "ev-acc"))
CONCEPT = Hypothesis(FaultDomain.DATA, "data.concept_drift", 0.6, ActionKind.NOTIFY, "concept",
                     evidence_ids=("ev-acc",))
NAN = Hypothesis(FaultDomain.MODEL, "model.nonfinite_weights", 0.95, ActionKind.CLAMP, "nan",
                 evidence_ids=("ev-nan",))


def opened(hyps=(DRIFT,), at=100.0):
    inc, entries = lifecycle.open_incident("digits", list(hyps), ["ev-drift"], at, ["input_drift: 3"])
    return inc


def test_transitions_return_new_incidents_and_leave_the_old_one_alone():
    inc = opened()
    with pytest.raises(dataclasses.FrozenInstanceError):
        inc.status = IncidentStatus.RESOLVED  # type: ignore[misc]
    mitigated, entry = lifecycle.mitigate(inc, 150.0, "clamp verified")
    assert (mitigated.status, mitigated.mitigated_at, entry.kind) == (IncidentStatus.MITIGATED, 150.0,
                                                                      TimelineKind.MITIGATED)
    escalated, entry = lifecycle.escalate(mitigated, 160.0, "worse")
    assert escalated.escalated and escalated.severity is Severity.CRITICAL and entry.kind is TimelineKind.ESCALATED
    resolved, entry = lifecycle.resolve(escalated, 170.0, "quiet", actor="alice")
    assert resolved.status is IncidentStatus.RESOLVED and entry.data == {"actor": "alice"}
    assert inc.status is IncidentStatus.OPEN and not inc.escalated and inc.resolved_at is None
    assert inc.with_action("act-1").action_ids == ("act-1",) and inc.action_ids == ()
    assert inc.with_action("act-1").with_action("act-1").action_ids == ("act-1",)


def test_update_replaces_the_ranking_until_incidentd_acted():
    inc = opened()
    upd = lifecycle.update_incident(inc, [NAN, DRIFT], ["ev-nan"], 110.0)
    assert upd.changed and upd.incident.top == NAN and upd.incident.evidence_ids == ("ev-drift", "ev-nan")
    assert upd.incident.severity is Severity.CRITICAL and [e.kind for e in upd.entries] == [TimelineKind.HYPOTHESES]
    acted = inc.with_action("act-1")
    # after an action, a hypothesis on the evidence the incident holds does not rewrite the story
    frozen = lifecycle.update_incident(acted, [CONCEPT], ["ev-acc"], 110.0)
    assert not frozen.changed and frozen.incident == acted


def test_after_an_action_a_cause_on_evidence_of_its_own_joins_the_incident_as_a_simultaneous_cause():
    acted = opened().with_action("act-1")
    upd = lifecycle.update_incident(acted, [NAN], ["ev-nan"], 110.0)
    assert upd.changed and [h.root_cause for h in upd.incident.causes] == ["data.covariate_drift",
                                                                          "model.nonfinite_weights"]
    assert upd.incident.top == DRIFT and "ev-nan" in upd.incident.evidence_ids
    assert upd.incident.severity is Severity.CRITICAL and "another simultaneous cause" in upd.entries[0].message


def test_one_fixed_cause_leaves_the_incident_open_on_the_remaining_one():
    inc = opened((NAN, DRIFT))
    remaining = lifecycle.remaining_causes(inc, {"model.nonfinite_weights"})
    assert remaining == (DRIFT,)
    out, entry = lifecycle.fix_one(inc, 150.0, "model.nonfinite_weights", "clamp verified", remaining)
    assert out.status is IncidentStatus.OPEN and entry.kind is TimelineKind.CAUSE_FIXED
    assert entry.data == {"fixed": "model.nonfinite_weights", "remaining": ["data.covariate_drift"]}
    assert "data.covariate_drift (data, notify: no action on the model)" in entry.message
    assert lifecycle.remaining_causes(inc, {"model.nonfinite_weights", "data.covariate_drift"}) == ()


def test_a_cause_is_stable_when_it_stayed_among_the_causes():
    assert lifecycle.stable_cause([{"a"}, {"a", "b"}, {"b", "a"}], "a", 3)
    assert not lifecycle.stable_cause([{"a"}, {"b"}], "a", 2)
    assert not lifecycle.stable_cause([{"a"}], "a", 2)


def test_a_weaker_hypothesis_on_evidence_from_while_the_diagnosis_held_is_fading():
    inc = opened()
    support = [Evidence("ev-drift", EvidenceKind.ANOMALY, "digits", "input_drift", 100.0, "drift", ended_at=180.0)]
    assert lifecycle.fading(inc, CONCEPT, {"ev-acc": 120.0}, support)
    assert not lifecycle.fading(inc, CONCEPT, {"ev-acc": 200.0}, support), "started after: a new development"
    assert not lifecycle.fading(inc, NAN, {"ev-nan": 120.0}, support), "a stronger one is never fading"
    assert not lifecycle.fading(inc, None, {}, support)


def test_a_weaker_hypothesis_on_symptoms_the_diagnosis_does_not_explain_is_a_second_fault_not_a_leftover():
    memory = Hypothesis(FaultDomain.HARDWARE, "hardware.memory_pressure", 0.8, ActionKind.RESTART, "memory",
                        evidence_ids=("ev-mem",), explains=("process_memory",))
    drift = dataclasses.replace(DRIFT, explains=("input_drift", "accuracy"))
    concept = dataclasses.replace(CONCEPT, explains=("accuracy",))
    inc = opened((drift,))
    # the drift's accuracy drop still lingers (its support has not ended) when the memory balloon starts
    support = [Evidence("ev-acc", EvidenceKind.ANOMALY, "digits", "accuracy", 100.0, "accuracy")]
    assert lifecycle.fading(inc, concept, {"ev-acc": 120.0}, support), "a leftover of the diagnosis"
    assert not lifecycle.fading(inc, memory, {"ev-mem": 120.0}, support)
    # and once the incident acted, it joins as a cause of its own
    upd = lifecycle.update_incident(inc.with_action("act-1"), [memory, concept], ["ev-mem", "ev-acc"], 130.0)
    assert [h.root_cause for h in upd.incident.causes] == ["data.covariate_drift", "hardware.memory_pressure"]


def test_a_mitigated_incident_is_superseded_only_by_a_confident_new_fault_after_the_fix():
    inc, _ = lifecycle.mitigate(opened(), 150.0, "fixed")
    assert lifecycle.superseded(inc, NAN, {"ev-nan": 160.0}, min_confidence=0.6)
    assert not lifecycle.superseded(inc, NAN, {"ev-nan": 140.0}, min_confidence=0.6), "lingering from before"
    assert not lifecycle.superseded(inc, NAN, {"ev-nan": 160.0}, min_confidence=0.99)
    assert not lifecycle.superseded(opened(), NAN, {"ev-nan": 160.0}, min_confidence=0.6), "not mitigated"


def test_restart_symptoms_are_suppressed_only_within_the_grace():
    assert lifecycle.restart_suppressed("target_down", 100.0, 110.0, grace=30.0)
    assert not lifecycle.restart_suppressed("target_down", 100.0, 140.0, grace=30.0)
    assert not lifecycle.restart_suppressed("accuracy", 100.0, 110.0, grace=30.0)
    assert not lifecycle.restart_suppressed("target_down", None, 110.0, grace=30.0)


def test_an_episode_lasts_from_active_until_observed_inactive_and_missing_data_keeps_it_open():
    ids = iter(["ev-1", "ev-2"])
    ep = lifecycle.track_episodes({}, ["latency"], {"latency", "accuracy"}, make_id=lambda: next(ids))
    assert ep.open == {"latency": "ev-1"} and ep.started == ("latency",) and ep.ended == ()
    ep = lifecycle.track_episodes(ep.open, [], {"accuracy"}, make_id=lambda: next(ids))
    assert ep.open == {"latency": "ev-1"} and ep.ended == (), "no reading is not recovery"
    ep = lifecycle.track_episodes(ep.open, [], {"latency"}, make_id=lambda: next(ids))
    assert ep.open == {} and ep.ended == ("ev-1",)
    ep = lifecycle.track_episodes(ep.open, ["latency"], {"latency"}, make_id=lambda: next(ids))
    assert ep.open == {"latency": "ev-2"}, "a new episode gets a new id"


def test_a_diagnosis_is_stable_after_the_same_top_for_enough_cycles():
    assert lifecycle.stable_top(["a", "b", "b"], 2)
    assert not lifecycle.stable_top(["b", "a"], 2)
    assert not lifecycle.stable_top(["b"], 2)
    assert lifecycle.quiet_since(None, busy=False, now=5.0) == 5.0
    assert lifecycle.quiet_since(5.0, busy=False, now=9.0) == 5.0
    assert lifecycle.quiet_since(5.0, busy=True, now=9.0) is None


def test_an_unknown_recommended_action_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown recommended_action 'reboot'"):
        Hypothesis(FaultDomain.MODEL, "model.x", 0.9, "reboot", "x")  # type: ignore[arg-type]
    assert Hypothesis(FaultDomain.MODEL, "model.x", 0.9, "clamp", "x").recommended_action is ActionKind.CLAMP  # type: ignore[arg-type]


# ---------------------------------------------------------------- which cause an action goes to

ROLLBACK = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "bad", evidence_ids=("ev-v",))
RESTART = Hypothesis(FaultDomain.HARDWARE, "hardware.cpu_contention", 0.8, ActionKind.RESTART, "cpu",
                     evidence_ids=("ev-cpu",))
ALTERNATIVE = Hypothesis(FaultDomain.MODEL, "model.exploding_weights", 0.7, ActionKind.CLAMP, "alt",
                         alternative_to=("model.bad_version",))


def test_the_first_stable_cause_that_changes_the_model_gets_the_action():
    stable = [{"model.bad_version", "hardware.cpu_contention"}] * 2
    causes = {"model.bad_version", "hardware.cpu_contention"}
    assert lifecycle.next_cause_to_act([DRIFT, ROLLBACK, RESTART], causes, set(), stable, 2) is ROLLBACK
    # once acted on, the next simultaneous cause gets its own action
    assert lifecycle.next_cause_to_act([ROLLBACK, RESTART], causes, {"model.bad_version"}, stable, 2) is RESTART


def test_no_action_for_an_unstable_cause_an_alternative_or_a_cause_outside_the_incident():
    assert lifecycle.next_cause_to_act([ROLLBACK], {"model.bad_version"}, set(), [{"model.bad_version"}], 2) is None
    assert lifecycle.next_cause_to_act([ROLLBACK], set(), set(), [{"model.bad_version"}] * 2, 2) is None
    assert lifecycle.next_cause_to_act([ALTERNATIVE], {"model.exploding_weights"}, set(),
                                       [{"model.exploding_weights"}] * 3, 2) is None
    assert lifecycle.next_cause_to_act([DRIFT], {"data.covariate_drift"}, set(),
                                       [{"data.covariate_drift"}] * 3, 2) is None   # notify changes nothing
