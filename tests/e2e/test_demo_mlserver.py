"""The whole loop on a real third-party server: `incidentd demo --server mlserver --fast --json`.

MLServer runs from its own venv (scripts/servers/install_model_servers.sh, which the test setup runs); the
sidecar watches it through its metrics and its proxy, and the service acts on it through MLServer's model
repository API only. With CI=true a missing MLServer fails; elsewhere it skips with the reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

EXPECTED = {
    "bad_version_deploy": ("model", "model.bad_version", "rollback"),
    "input_drift": ("data", "data.covariate_drift", None),
    "cpu_starvation": ("hardware", "hardware.cpu_contention", "restart"),
}


@pytest.fixture(scope="module")
def report_on_mlserver(tmp_path_factory):
    from incidentd.demo_servers.mlserver import MLServerUnavailable, find_venv

    try:
        find_venv()
    except MLServerUnavailable as e:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    workdir = tmp_path_factory.mktemp("demo-mlserver")
    proc = subprocess.run([sys.executable, "-m", "incidentd.cli", "demo", "--server", "mlserver", "--fast",
                           "--json", "--no-plots", "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line on stdout, got {proc.stdout!r}\n{proc.stderr}"
    return json.loads(lines[0]), proc, workdir


def test_every_fault_on_mlserver_is_localized_and_fixed_through_mlserver(report_on_mlserver):
    report, proc, workdir = report_on_mlserver
    assert set(report) == {"faults", "false_incidents"}   # the same JSON object as on our own server
    by_name = {f["fault"]: f for f in report["faults"]}
    assert set(by_name) == set(EXPECTED), proc.stderr[-4000:]
    for name, (domain, cause, action) in EXPECTED.items():
        f = by_name[name]
        ctx = f"{name}: {f}\n--- stderr ---\n{proc.stderr[-6000:]}\nworkdir {workdir}"
        assert f["detected"] and f["domain"] == domain and f["root_cause"] == cause, ctx
        assert f["action"] == action, ctx
        assert f["remediated"] is (action is not None), ctx
    assert report["false_incidents"] == 0, proc.stderr[-6000:]
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_the_rollback_left_mlserver_serving_the_known_good_version(report_on_mlserver):
    _, proc, workdir = report_on_mlserver
    versions = workdir / "mlserver" / "models" / "digits"
    enabled = sorted(p.parent.name for p in versions.glob("*/model-settings.json"))
    assert enabled == ["v1"], proc.stderr[-3000:]            # v2's settings set aside, never deleted
    assert (versions / "v2" / "model-settings.json.disabled").exists()
