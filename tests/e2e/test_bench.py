"""`incidentd bench faults --fast --repeat 1 --json`: every fault of the taxonomy, diagnosed and fixed.

Correctness is asserted (domain, root cause, no false incident or remediation); the times to detect and
to recover are printed, not asserted (timings on a shared machine are measured, never tested).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from incidentd.bench import GPU_FAULTS, HARM, PARAMS

pytestmark = pytest.mark.e2e

PER_FAULT_KEYS = {"fault", "runs", "domain_correct", "root_cause_correct", "mttd_median_s", "mttr_median_s"}
SLOW_FAULT_KEYS = {"harm_s", "margin_median_s", "detected_before_harm"}   # slow faults (issue 18) add these


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    plot = tmp_path_factory.mktemp("bench") / "bench.png"
    proc = subprocess.run([sys.executable, "-m", "incidentd.cli", "bench", "faults", "--fast", "--repeat", "1",
                           "--json", "--plot", str(plot)], capture_output=True, text=True, timeout=2400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0 and len(lines) == 1, f"{proc.stdout!r}\n{proc.stderr[-4000:]}"
    report = json.loads(lines[0])
    print(f"\nbench: MTTD median {report['mttd_median_s']} s, MTTR median {report['mttr_median_s']} s; "
          + ", ".join(f"{f['fault']} {f['mttd_median_s']}/{f['mttr_median_s']}" for f in report["per_fault"]))
    assert plot.read_bytes()[:4] == b"\x89PNG", "--plot writes the picture"
    return report, proc.stderr


@pytest.mark.timeout(2700)
def test_json_is_exactly_the_documented_object(bench):
    report, _ = bench
    assert set(report) == {"runs", "domain_accuracy", "root_cause_accuracy", "mttd_median_s", "mttr_median_s",
                           "false_incidents", "false_remediations", "per_fault", "slow_fault_margins"}
    assert [f["fault"] for f in report["per_fault"]] == [*PARAMS, *GPU_FAULTS]
    assert all(set(f) == PER_FAULT_KEYS | (SLOW_FAULT_KEYS if f["fault"] in HARM else set()) and f["runs"] == 1
               for f in report["per_fault"])
    assert set(report["slow_fault_margins"]) == set(HARM)
    assert report["runs"] == len(PARAMS) + len(GPU_FAULTS)


@pytest.mark.timeout(2700)
def test_every_fault_is_localized_and_nothing_healthy_is_touched(bench):
    report, stderr = bench
    wrong = [f for f in report["per_fault"] if f["domain_correct"] != 1 or f["root_cause_correct"] != 1]
    assert not wrong, f"{wrong}\n{stderr[-6000:]}"
    assert report["domain_accuracy"] == 1.0 and report["root_cause_accuracy"] >= 0.95
    assert report["false_incidents"] == 0 and report["false_remediations"] == 0, stderr[-6000:]
    assert all(f["mttd_median_s"] is not None for f in report["per_fault"]), "every fault was detected"
    late = [f for f in report["per_fault"] if f["fault"] in HARM and f["detected_before_harm"] != 1]
    assert not late, f"slow faults not detected before their point of harm: {late}"
