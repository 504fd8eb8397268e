"""The whole loop: `incidentd demo --fast --json` detects, localizes, remediates and verifies every fault."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

EXPECTED = {
    "nonfinite_weights": ("model", "clamp"),
    "bad_version_deploy": ("model", "rollback"),
    "input_drift": ("data", None),
    "cpu_starvation": ("hardware", "restart"),
}


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "incidentd.cli", "demo", "--fast", "--json", "--workdir",
                           str(workdir)], capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got {proc.stdout!r}\n{proc.stderr}"
    report = json.loads(lines[0])
    return report, proc, workdir


def test_json_shape_is_exactly_the_documented_one(demo_report):
    report, proc, _ = demo_report
    assert set(report) == {"faults", "false_incidents"}
    keys = {"fault", "expected_domain", "detected", "detect_seconds", "domain", "root_cause", "action",
            "remediated", "recover_seconds"}
    for f in report["faults"]:
        assert set(f) == keys
    assert "fault nonfinite_weights" in proc.stderr, "progress goes to stderr"


def test_every_fault_is_detected_localized_and_remediated_where_expected(demo_report):
    report, proc, workdir = demo_report
    by_name = {f["fault"]: f for f in report["faults"]}
    assert set(by_name) == set(EXPECTED), proc.stderr
    for name, (domain, action) in EXPECTED.items():
        f = by_name[name]
        ctx = f"{name}: {f}\n--- stderr ---\n{proc.stderr[-4000:]}\nworkdir {workdir}"
        assert f["detected"], ctx
        assert f["detect_seconds"] is not None, ctx      # detected inside the demo's own window
        assert f["domain"] == domain, ctx
        assert f["action"] == action, ctx
        if action is None:
            assert not f["remediated"], ctx
        else:
            assert f["remediated"] and f["recover_seconds"] is not None, ctx
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_healthy_control_opens_no_incident(demo_report):
    report, proc, _ = demo_report
    assert report["false_incidents"] == 0, proc.stderr[-4000:]
