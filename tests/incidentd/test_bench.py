"""The fault benchmark's scoring: accuracy, medians and false counts are computed as documented."""
from __future__ import annotations

from diagnosis.types import ActionKind
from incidentd.bench import BenchReport, default_actions, taxonomy
from incidentd.demo import FaultResult


def result(fault, domain, root, exp_domain, exp_root, detect=2.0, recover=None, false_rem=False):
    r = FaultResult(fault, exp_domain, detected=detect is not None, detect_seconds=detect, domain=domain,
                    root_cause=root, expected_root_cause=exp_root, recover_seconds=recover)
    r.false_remediation = false_rem
    return r


def test_summary_shape_and_figures():
    runs = [
        result("crash", "hardware", "hardware.process_crash", "hardware", "hardware.process_crash", 3.0, 10.0),
        result("crash", "hardware", "hardware.cpu_contention", "hardware", "hardware.process_crash", 5.0, 20.0),
        result("label_stall", "model", "model.concept_drift", "data", "data.label_stall", 40.0, None, True),
        result("gpu_errors", None, None, "hardware", "hardware.gpu_errors", None),
    ]
    s = BenchReport(runs, control_incidents=1, control_actions=0, extra_incidents=2).summary()
    assert set(s) == {"runs", "domain_accuracy", "root_cause_accuracy", "mttd_median_s", "mttr_median_s",
                      "false_incidents", "false_remediations", "per_fault"}
    assert s["runs"] == 4
    assert s["domain_accuracy"] == 0.5 and s["root_cause_accuracy"] == 0.25
    assert s["mttd_median_s"] == 5.0 and s["mttr_median_s"] == 15.0
    assert s["false_incidents"] == 3 and s["false_remediations"] == 1
    crash = next(f for f in s["per_fault"] if f["fault"] == "crash")
    assert crash == {"fault": "crash", "runs": 2, "domain_correct": 2, "root_cause_correct": 1,
                     "mttd_median_s": 4.0, "mttr_median_s": 15.0}
    gpu = next(f for f in s["per_fault"] if f["fault"] == "gpu_errors")
    assert gpu["mttd_median_s"] is None


def test_taxonomy_expectations_come_from_the_rule_pack():
    actions = default_actions()
    assert actions["model.bad_version"] is ActionKind.ROLLBACK and actions["data.covariate_drift"] is ActionKind.NOTIFY
    by_name = {f.name: f for f in taxonomy()}
    assert by_name["crash"].expected_action is ActionKind.RESTART
    assert by_name["unit_change"].expected_action is None            # data faults never touch the model
    assert by_name["gpu_thermal"].expected_root_cause == "hardware.gpu_thermal"


def test_bench_plot_is_written(tmp_path):
    from incidentd.plots import render_bench

    runs = [result("crash", "hardware", "hardware.process_crash", "hardware", "hardware.process_crash", 3.0, 10.0),
            result("gpu_errors", "hardware", "hardware.gpu_thermal", "hardware", "hardware.gpu_errors", 2.0)]
    report = BenchReport(runs, control_incidents=0, control_actions=0, extra_incidents=0).summary()
    out = render_bench(report, str(tmp_path / "bench.png"))
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_slow_faults_report_the_margin_before_harm():
    from incidentd.bench import harm_seconds

    assert harm_seconds("memory_leak") == 100.0 and harm_seconds("disk_fill") == 60.0
    assert harm_seconds("latency_creep") == 250.0 and harm_seconds("crash") is None
    runs = [result("memory_leak", "hardware", "hardware.memory_leak", "hardware", "hardware.memory_leak", 22.0),
            result("memory_leak", "hardware", "hardware.memory_leak", "hardware", "hardware.memory_leak", 30.0),
            result("disk_fill", None, None, "hardware", "hardware.disk_full", None),
            result("crash", "hardware", "hardware.process_crash", "hardware", "hardware.process_crash", 3.0)]
    s = BenchReport(runs, 0, 0, 0, harm={"memory_leak": 100.0, "disk_fill": 60.0}).summary()
    leak = next(f for f in s["per_fault"] if f["fault"] == "memory_leak")
    assert leak["harm_s"] == 100.0 and leak["margin_median_s"] == 74.0 and leak["detected_before_harm"] == 2
    disk = next(f for f in s["per_fault"] if f["fault"] == "disk_fill")
    assert disk["margin_median_s"] is None and disk["detected_before_harm"] == 0, "undetected: no margin"
    assert "harm_s" not in next(f for f in s["per_fault"] if f["fault"] == "crash")
    assert s["slow_fault_margins"] == {"memory_leak": 74.0, "disk_fill": None}


def test_slow_faults_are_in_the_taxonomy_with_their_root_causes():
    by_name = {f.name: f for f in taxonomy(["memory_leak", "latency_creep", "disk_fill"])}
    assert by_name["memory_leak"].expected_root_cause == "hardware.memory_leak"
    assert by_name["memory_leak"].expected_action is ActionKind.RESTART
    assert by_name["disk_fill"].expected_root_cause == "hardware.disk_full"
    assert by_name["disk_fill"].expected_action is None
    assert by_name["latency_creep"].expected_action is None
