"""Several causes at once: discounts lower a confidence without removing a cause, the floor, the relations
between hypotheses (simultaneous causes vs alternatives), the symptoms each explains, and tie-breaks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from diagnosis.rules import DEFAULT_PACK, ChangeFact, Facts, RuleEngine, RuleError, SignalFact
from diagnosis.types import ActionKind, FaultDomain, Hypothesis, Incident, IncidentStatus, Severity


def sig(name: str, onset: float) -> SignalFact:
    return SignalFact(name, onset, 1.0, 1.0, f"{name} moved", f"ev-{name}")


def facts(*signals: SignalFact, changes: tuple[ChangeFact, ...] = (), **context: Any) -> Facts:
    return Facts(model="digits", signals={s.name: s for s in signals}, changes=list(changes),
                 context={"running_version": "v2", "running_version_known_good": False, **context})


def pack(tmp_path: Path, rules: list[dict[str, Any]], **extra: Any) -> Path:
    p = tmp_path / "pack.yaml"
    p.write_text(yaml.safe_dump({"pack": "t", **extra, "rules": rules}))
    return p


def rule(name: str, when: dict[str, Any], cause: str, weight: float, action: str = "notify",
         **more: Any) -> dict[str, Any]:
    domain = cause.split(".")[0]
    return {"name": name, "when": when, **more,
            "then": {"domain": domain, "root_cause": cause, "weight": weight, "action": action,
                     "explanation": f"rule {name}"}}


DEPLOY = ChangeFact("deploy", 950.0, "chg-deploy")


def test_a_bad_release_during_input_drift_ranks_both_causes_each_with_its_own_evidence() -> None:
    engine = RuleEngine.load([DEFAULT_PACK])
    hyps = {h.root_cause: h for h in engine.evaluate(
        facts(sig("accuracy", 1000.0), sig("input_drift", 1030.0), changes=(DEPLOY,)))}
    release, drift = hyps["model.bad_version"], hyps["data.covariate_drift"]
    assert release.recommended_action is ActionKind.ROLLBACK and drift.recommended_action is ActionKind.NOTIFY
    assert set(release.evidence_ids) == {"ev-accuracy", "chg-deploy"}
    assert set(drift.evidence_ids) == {"ev-input_drift"}
    # the drift accounts for the accuracy it lowers too, without it being evidence for the drift
    assert release.explains == ("accuracy",) and set(drift.explains) == {"input_drift", "accuracy"}
    # what each moves, active or not: the verification of one cause's fix leaves these to the other
    assert {"accuracy", "prediction_drift", "input_drift"} <= set(drift.affects)
    assert release.simultaneous and drift.simultaneous


def test_drift_before_the_drop_discounts_the_release_and_the_discount_says_why(tmp_path: Path) -> None:
    text = DEFAULT_PACK.read_text().replace("floor: 0.3", "floor: 0.0")
    p = tmp_path / "no-floor.yaml"
    p.write_text(text)
    hyps = {h.root_cause: h for h in RuleEngine.load([p]).evaluate(
        facts(sig("input_drift", 990.0), sig("accuracy", 1000.0), changes=(DEPLOY,)))}
    # discounted, not removed: 0.9 x 0.3
    assert hyps["model.bad_version"].confidence == pytest.approx(0.27)
    assert "inputs drifted before accuracy fell" in hyps["model.bad_version"].discounts[0]
    # with the default floor the long shot is left out of the ranking
    default = RuleEngine.load([DEFAULT_PACK]).evaluate(
        facts(sig("input_drift", 990.0), sig("accuracy", 1000.0), changes=(DEPLOY,)))
    assert "model.bad_version" not in {h.root_cause for h in default}


def test_hypotheses_resting_on_the_same_symptom_are_alternatives_not_causes(tmp_path: Path) -> None:
    p = pack(tmp_path, [
        rule("slow-cpu", {"fact": "signal.latency", "op": "active"}, "hardware.cpu_contention", 0.8, "restart"),
        rule("slow-release", {"all": [{"fact": "signal.latency", "op": "active"},
                                      {"fact": "change.deploy", "op": "within", "value": 600}]},
             "model.bad_version", 0.6, "rollback"),
        rule("drift", {"fact": "signal.input_drift", "op": "active"}, "data.covariate_drift", 0.7),
    ])
    hyps = RuleEngine.load([p]).evaluate(facts(sig("latency", 1000.0), sig("input_drift", 1000.0),
                                               changes=(DEPLOY,)))
    by = {h.root_cause: h for h in hyps}
    assert by["hardware.cpu_contention"].alternative_to == ()
    assert by["model.bad_version"].alternative_to == ("hardware.cpu_contention",)
    assert by["data.covariate_drift"].alternative_to == ()
    inc = Incident(id="inc-1", model="digits", dedup_key="model:digits", status=IncidentStatus.OPEN,
                   severity=Severity.WARNING, opened_at=0.0, updated_at=0.0, hypotheses=tuple(hyps))
    assert [h.root_cause for h in inc.causes] == ["hardware.cpu_contention", "data.covariate_drift"]


def test_the_floor_leaves_out_weak_hypotheses(tmp_path: Path) -> None:
    p = pack(tmp_path, [rule("weak", {"fact": "signal.latency", "op": "active"}, "hardware.cpu_contention", 0.2)],
             floor=0.3)
    assert RuleEngine.load([p]).evaluate(facts(sig("latency", 1.0))) == []


@pytest.mark.parametrize(("discount", "message"), [
    ({"when": {"fact": "signal.input_drift", "op": "active"}, "factor": 1.5, "reason": "x"},
     "field 'discounts.0.factor'"),
    ({"when": {"fact": "signal.nope", "op": "active"}, "factor": 0.5, "reason": "x"}, "unknown signal 'nope'"),
    ({"when": {"fact": "signal.input_drift", "op": "active"}, "factor": 0.5}, "field 'discounts.0.reason'"),
])
def test_a_bad_discount_is_an_error_naming_file_rule_and_field(tmp_path: Path, discount: dict[str, Any],
                                                               message: str) -> None:
    p = pack(tmp_path, [rule("r1", {"fact": "signal.latency", "op": "active"}, "hardware.cpu_contention", 0.5,
                             discounts=[discount])])
    with pytest.raises(RuleError) as err:
        RuleEngine.load([p])
    assert str(p) in str(err.value) and "rule 'r1'" in str(err.value) and message in str(err.value)


def test_explains_names_only_known_signals(tmp_path: Path) -> None:
    r = rule("r1", {"fact": "signal.latency", "op": "active"}, "hardware.cpu_contention", 0.5)
    r["then"]["explains"] = ["accuracy", "vibes"]
    with pytest.raises(RuleError, match=r"rule 'r1': field 'then.explains'.*unknown signal\(s\) \['vibes'\]"):
        RuleEngine.load([pack(tmp_path, [r])])


def test_a_tie_goes_to_the_more_specific_rule_whatever_the_pack_order(tmp_path: Path) -> None:
    loose = rule("loose", {"fact": "signal.latency", "op": "active"}, "hardware.cpu_contention", 0.5, "notify")
    tight = rule("tight", {"all": [{"fact": "signal.latency", "op": "active"},
                                   {"fact": "signal.process_cpu", "op": "active"}]},
                 "hardware.cpu_contention", 0.5, "restart")
    f = facts(sig("latency", 1.0), sig("process_cpu", 1.0))
    for order in ([loose, tight], [tight, loose]):
        top = RuleEngine.load([pack(tmp_path, order)]).evaluate(f)[0]
        assert (top.recommended_action, top.explanation) == (ActionKind.RESTART, "rule tight")


def test_hypothesis_relations_survive_a_round_trip() -> None:
    h = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "x", ("e1",), ("r",),
                   explains=("accuracy",), alternative_to=("hardware.cpu_contention",), discounts=("r: why (x0.3)",),
                   affects=("accuracy", "error_rate"))
    assert Hypothesis.from_dict(h.to_dict()) == h
