"""``incidentd rules check|test`` through the real Typer command, exit codes and output included."""
from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from diagnosis.rules import DEFAULT_PACK, load_pack
from incidentd.commands import rules

DEFAULT_TESTS = DEFAULT_PACK.parent / "tests" / "default_test.yaml"
N_RULES = len(load_pack(DEFAULT_PACK).rules)
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """incidentd"""

    rules.register(app)
    return app


def _run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(_app(), ["rules", *args])


GOOD = """
pack: extra
rules:
  - name: slow-after-config
    when:
      all:
        - {fact: signal.latency, op: active}
        - {fact: change.config_change, op: within, value: 600}
    then: {domain: hardware, root_cause: hardware.cpu_contention, weight: 0.5, action: notify,
           explanation: "{context.model} slowed after a config change ({signal.latency.summary})"}
"""


def test_check_default_pack_one_line_summary() -> None:
    r = _run("check", str(DEFAULT_PACK))
    assert r.exit_code == 0, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"OK {DEFAULT_PACK}: pack 'default', {N_RULES} rules")


def test_check_several_packs_one_line_each(tmp_path: Path) -> None:
    p = tmp_path / "extra.yaml"
    p.write_text(GOOD)
    r = _run("check", str(DEFAULT_PACK), str(p))
    assert r.exit_code == 0, r.output
    assert [ln.split(":")[0] for ln in r.output.strip().splitlines()] == [f"OK {DEFAULT_PACK}", f"OK {p}"]


def test_check_names_file_rule_and_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace("signal.latency, op: active", "signal.latncy, op: active"))
    r = _run("check", str(p))
    assert r.exit_code == 1
    assert f"{p}: rule 'slow-after-config': field 'when.all.0.fact'" in r.output
    assert "unknown signal 'latncy'" in r.output


def test_check_bad_action_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace("action: notify", "action: reboot"))
    r = _run("check", str(p))
    assert r.exit_code == 1 and "field 'then.action'" in r.output
    r = _run("check", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 1 and "rule pack not found" in r.output


def test_check_with_default_catches_duplicate_rule_names(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text(GOOD.replace("slow-after-config", "label-stall"))
    assert _run("check", str(p)).exit_code == 0
    r = _run("check", "--with-default", str(p))
    assert r.exit_code == 1 and "repeated: ['label-stall']" in r.output


def test_test_default_file_passes() -> None:
    r = _run("test", str(DEFAULT_TESTS))
    assert r.exit_code == 0, r.output
    assert "SUCCESS:" in r.output and f"{N_RULES} of {N_RULES} rules exercised" in r.output
    r = _run("test", "-v", str(DEFAULT_TESTS))
    assert r.output.count("  PASS  ") >= N_RULES


def test_test_failure_prints_diff_and_exits_1(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("""
tests:
  - name: drift is not a bad release
    context: {running_version: v2, running_version_known_good: false}
    signals: [{name: input_drift, onset: 990}, {name: accuracy, onset: 1000}]
    changes: [{kind: deploy, at: 700}]
    expect: [{root_cause: model.bad_version, action: rollback}]
""")
    r = _run("test", str(p))
    assert r.exit_code == 1
    assert "FAIL  drift is not a bad release" in r.output
    assert "- missing: model.bad_version" in r.output
    assert "1. data.covariate_drift (data, notify" in r.output
    assert "FAILED: 0 passed, 1 failed" in r.output


def test_test_require_coverage(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("tests:\n  - {name: stall, signals: [{name: label_stall}], "
                 "expect: [{root_cause: data.label_stall}]}\n")
    assert _run("test", str(p)).exit_code == 0
    r = _run("test", "--require-coverage", str(p))
    assert r.exit_code == 1 and "rules no test made fire: nonfinite-weights" in r.output


def test_test_invalid_file_exits_1_naming_field(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("tests:\n  - {name: x, signals: [{name: nope}], expect: []}\n")
    r = _run("test", str(p))
    assert r.exit_code == 1 and "test 'x': field 'signals.0.name'" in r.output
