"""The rules engine ranks hypotheses from evidence, and bad rule packs fail at load naming what is wrong."""
from __future__ import annotations

import pytest

from diagnosis.rules import DEFAULT_PACK, ChangeFact, Facts, RuleEngine, RuleError, SignalFact, load_pack
from diagnosis.types import ActionKind, FaultDomain


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine.load([DEFAULT_PACK])


def sig(name: str, onset: float = 100.0, value: float = 1.0) -> SignalFact:
    return SignalFact(name, onset, 1.0, value, f"{name} moved", f"ev-{name}")


def facts(*signals: SignalFact, changes=(), **context) -> Facts:
    return Facts(model="digits", signals={s.name: s for s in signals}, changes=list(changes),
                 context={"running_version": "v1", "running_version_known_good": True, **context})


def test_nonfinite_weights_rank_first_and_recommend_clamp(engine):
    hyps = engine.evaluate(facts(sig("nonfinite_outputs"), sig("weights_nonfinite", value=12)))
    assert hyps[0].root_cause == "model.nonfinite_weights"
    assert hyps[0].recommended_action is ActionKind.CLAMP
    assert set(hyps[0].evidence_ids) == {"ev-nonfinite_outputs", "ev-weights_nonfinite"}
    assert "digits v1" in hyps[0].explanation


def test_accuracy_drop_after_deploy_of_unknown_version_is_a_bad_version(engine):
    deploy = ChangeFact("deploy", 90.0, "chg-1")
    hyps = engine.evaluate(facts(sig("accuracy", onset=95.0), changes=[deploy], running_version="v2",
                                 running_version_known_good=False))
    assert (hyps[0].domain, hyps[0].root_cause, hyps[0].recommended_action) == \
        (FaultDomain.MODEL, "model.bad_version", ActionKind.ROLLBACK)
    assert "chg-1" in hyps[0].evidence_ids


def test_accuracy_drop_with_input_drift_is_data_not_model(engine):
    deploy = ChangeFact("deploy", 90.0, "chg-1")
    hyps = engine.evaluate(facts(sig("input_drift", onset=94.0), sig("accuracy", onset=96.0), changes=[deploy],
                                 running_version_known_good=False))
    assert hyps[0].domain is FaultDomain.DATA
    assert hyps[0].recommended_action is ActionKind.NOTIFY
    assert all(h.root_cause != "model.bad_version" for h in hyps)


def test_a_deploy_long_before_the_symptom_is_not_blamed(engine):
    old_deploy = ChangeFact("deploy", 100.0 - 5000, "chg-old")
    hyps = engine.evaluate(facts(sig("accuracy"), changes=[old_deploy], running_version_known_good=False))
    assert all(h.root_cause != "model.bad_version" for h in hyps)


def test_latency_with_cpu_saturation_is_hardware_restart(engine):
    hyps = engine.evaluate(facts(sig("latency", onset=101.0), sig("process_cpu", onset=100.0)))
    top = hyps[0]
    assert (top.domain, top.root_cause, top.recommended_action) == (FaultDomain.HARDWARE,
                                                                     "hardware.cpu_contention", ActionKind.RESTART)
    assert top.confidence == pytest.approx(0.9)   # 0.85 plus the onset-ordering boost


def test_no_signals_no_hypotheses(engine):
    assert engine.evaluate(facts()) == []


def write(tmp_path, text: str):
    p = tmp_path / "pack.yaml"
    p.write_text(text)
    return p


def test_unknown_signal_names_file_rule_and_field(tmp_path):
    p = write(tmp_path, """
pack: custom
rules:
  - name: slow
    when: {all: [{fact: signal.latencyy, op: active}]}
    then: {domain: hardware, root_cause: hardware.slow, weight: 0.5, action: notify, explanation: slow}
""")
    with pytest.raises(RuleError) as e:
        load_pack(p)
    msg = str(e.value)
    assert str(p) in msg and "rule 'slow'" in msg and "when.all.0.fact" in msg and "latencyy" in msg


def test_wrong_domain_prefix_and_bad_placeholder_are_rejected(tmp_path):
    p = write(tmp_path, """
pack: custom
rules:
  - name: r
    when: {fact: signal.latency, op: active}
    then: {domain: data, root_cause: model.x, weight: 0.5, action: notify, explanation: "{context.nope}"}
""")
    with pytest.raises(RuleError, match="root_cause 'model.x' must start with its domain 'data'"):
        load_pack(p)


def test_invalid_yaml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(RuleError, match="not found"):
        load_pack(tmp_path / "missing.yaml")
    with pytest.raises(RuleError, match="not valid YAML"):
        load_pack(write(tmp_path, "pack: [unclosed"))


def test_duplicate_rule_names_across_packs_are_rejected(tmp_path):
    with pytest.raises(RuleError, match="unique"):
        RuleEngine.load([DEFAULT_PACK, DEFAULT_PACK])
