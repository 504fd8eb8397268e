"""Rule unit tests: the default pack's test file passes and covers every rule; the runner catches mistakes."""
from __future__ import annotations

from pathlib import Path

import pytest

from diagnosis.rule_tests import RuleTestError, build_facts, load_test_file, run_test_file
from diagnosis.rules import DEFAULT_PACK, RuleError, load_pack

DEFAULT_TESTS = DEFAULT_PACK.parent / "tests" / "default_test.yaml"


def test_default_pack_tests_pass() -> None:
    report = run_test_file(DEFAULT_TESTS)
    failures = "\n".join(f"{o.name}: {list(o.problems)}" for o in report.failed)
    assert report.passed, failures
    assert len(report.outcomes) >= len(report.rules)


def test_every_default_rule_has_a_test() -> None:
    report = run_test_file(DEFAULT_TESTS)
    names = [r.name for r in load_pack(DEFAULT_PACK).rules]
    assert set(report.rules) == set(names)
    # named in an expectation ...
    assert report.unasserted == [], f"rules with no test naming them: {report.unasserted}"
    # ... and actually firing in at least one test
    assert report.uncovered == [], f"rules no test makes fire: {report.uncovered}"


def test_input_drift_outranks_bad_version_in_the_default_pack() -> None:
    """The discriminating case from the issue, checked directly rather than through the YAML."""
    tf = load_test_file(DEFAULT_TESTS)
    case = next(t for t in tf.tests if "WITH input drift" in t.name)
    from diagnosis.rules import RuleEngine

    hyps = RuleEngine.load([DEFAULT_PACK]).evaluate(build_facts(case))
    assert hyps[0].root_cause == "data.covariate_drift"
    assert "model.bad_version" not in [h.root_cause for h in hyps]


def _write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_wrong_expectation_fails_with_a_readable_diff(tmp_path: Path) -> None:
    p = _write(tmp_path, """
tests:
  - name: drift blamed on the model
    context: {running_version: v2, running_version_known_good: false}
    signals: [{name: input_drift, onset: 990}, {name: accuracy, onset: 1000}]
    changes: [{kind: deploy, at: 700}]
    expect:
      - {root_cause: model.bad_version, domain: model, action: rollback}
""")
    report = run_test_file(p)
    assert not report.passed
    (o,) = report.failed
    assert any("missing: model.bad_version" in x for x in o.problems)
    assert o.hypotheses[0].root_cause == "data.covariate_drift"


def test_rank_domain_action_confidence_and_absent_are_each_checked(tmp_path: Path) -> None:
    p = _write(tmp_path, """
tests:
  - name: everything wrong
    context: {running_version: v1, running_version_known_good: true}
    signals: [{name: gpu_thermal, onset: 990}, {name: latency, onset: 1000}]
    expect:
      - {root_cause: hardware.cpu_contention, domain: data, action: restart, min_confidence: 0.99}
    absent: [hardware.gpu_thermal]
""")
    (o,) = run_test_file(p).outcomes
    kinds = sorted(x.split(":")[0] for x in o.problems)
    assert kinds == ["action", "confidence", "domain", "rank", "unexpected"], o.problems


def test_expect_empty_means_no_hypothesis(tmp_path: Path) -> None:
    p = _write(tmp_path, """
tests:
  - name: quiet
    signals: [{name: label_stall}]
    expect: []
""")
    (o,) = run_test_file(p).outcomes
    assert not o.passed and o.problems[0].startswith("expected no hypothesis")


def test_exact_rejects_extra_hypotheses(tmp_path: Path) -> None:
    p = _write(tmp_path, """
tests:
  - name: two causes
    signals: [{name: gpu_thermal}, {name: latency}]
    expect: [{root_cause: hardware.gpu_thermal}]
    exact: true
""")
    (o,) = run_test_file(p).outcomes
    assert o.problems == ("unexpected (exact): ['hardware.cpu_contention']",)


def test_rule_files_resolve_relative_to_the_test_file(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "mine.yaml").write_text("""
pack: mine
rules:
  - name: slow
    when: {fact: signal.latency, op: active}
    then: {domain: hardware, root_cause: hardware.slow, weight: 0.5, action: notify, explanation: slow}
""")
    p = _write(tmp_path, """
rule_files: [packs/mine.yaml]
tests:
  - name: slow
    signals: [{name: latency}]
    expect: [{root_cause: hardware.slow, rules: [slow], min_confidence: 0.5, max_confidence: 0.5}]
    exact: true
""")
    report = run_test_file(p)
    assert report.passed and report.rules == ("slow",) and report.uncovered == []


@pytest.mark.parametrize("body, needle", [
    ("tests:\n  - name: x\n    signals: [{name: latncy}]\n    expect: []\n",
     "test 'x': field 'signals.0.name': unknown signal 'latncy'"),
    ("tests:\n  - name: x\n    context: {versoin: v1}\n    expect: []\n",
     "test 'x': field 'context': unknown context key(s) ['versoin']"),
    ("tests:\n  - name: x\n    changes: [{kind: deployed, at: 1}]\n    expect: []\n",
     "test 'x': field 'changes.0.kind': unknown change kind 'deployed'"),
    ("tests:\n  - name: x\n    expect: [{root_cause: model.x, action: reboot}]\n",
     "test 'x': field 'expect.0.action': unknown action 'reboot'"),
    ("tests:\n  - name: x\n    signals: []\n", "test 'x': field 'expect': Field required"),
    ("tests:\n  - name: x\n    expect: [{root_cause: model.bad_version, rules: [no-such-rule]}]\n",
     "test 'x': field 'expect.0.rules': unknown rule(s) ['no-such-rule']"),
    ("rule_files: [missing.yaml]\ntests:\n  - {name: x, expect: []}\n", "rule pack not found"),
    ("tests: [\n", "not valid YAML"),
    ("tests:\n  - {name: x, expect: []}\n  - {name: x, expect: []}\n", "repeated: ['x']"),
])
def test_invalid_test_files_name_the_file_test_and_field(tmp_path: Path, body: str, needle: str) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(RuleError) as ei:
        run_test_file(p)
    assert needle in str(ei.value) and str(p) in str(ei.value)
    assert isinstance(ei.value, RuleTestError) or "rule pack not found" in needle


def test_facts_built_from_a_test() -> None:
    tf = load_test_file(DEFAULT_TESTS)
    case = next(t for t in tf.tests if t.changes)
    facts = build_facts(case)
    assert facts.changes[0].kind == case.changes[0].kind
    assert set(facts.signals) == {s.name for s in case.signals}
    assert facts.first_onset == min(s.onset for s in case.signals)
