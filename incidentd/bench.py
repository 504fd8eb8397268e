"""`incidentd bench faults`: every fault of the taxonomy, N times, plus healthy controls, scored.

It drives the same stack as the demo (model server supervised by the service, sidecar, traffic with
delayed labels) and injects faults through `incidentd inject`'s catalogue, so a result here is what a
user reproduces by hand with `incidentd inject FAULT --target URL`.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diagnosis.rules import DEFAULT_PACK, RuleEngine
from diagnosis.types import ActionKind
from incidentd.demo import Demo, Fault, FaultResult

# Parameters that make each fault unambiguous on the demo model within a fast cycle.
PARAMS: dict[str, list[str]] = {
    "nonfinite_weights": ["count=12"],
    "exploding_weights": ["scale=1000"],
    "bad_version": ["version=v2"],
    "concept_drift": ["fraction=0.6"],
    "covariate_drift": ["fraction=0.6", "shift=7"],
    "unit_change": [],
    "null_features": ["fraction=0.3"],
    "unseen_categories": [],
    "label_stall": [],
    "memory_pressure": [],
    "cpu_contention": ["threads=3", "seconds=300"],
    "crash": [],
    "hang": ["seconds=300"],
    # Slow faults (issue 18). Each has a point of harm (the leak's OOM exit, the latency cap, the written
    # total); the bench reports how long before it the incident opened. The leak is slow enough that its
    # trend is diagnosed before resident memory reaches 1.5x (memory pressure), fast enough to be due.
    "memory_leak": ["rate=6", "limit_megabytes=600"],
    "latency_creep": ["ramp=0.002", "max_seconds=0.5"],
    "disk_fill": ["rate=25", "megabytes=1500"],
}
# Slow fault -> (parameter at the point of harm, parameter of the rate toward it): harm at limit / rate.
HARM: dict[str, tuple[str, str]] = {"memory_leak": ("limit_megabytes", "rate"),
                                    "latency_creep": ("max_seconds", "ramp"),
                                    "disk_fill": ("megabytes", "rate")}
# A creeping latency with nothing else wrong is reported, not acted on (the latency-alone rule).
EXPECTED_ACTION: dict[str, ActionKind | None] = {"latency_creep": None}
GPU_FAULTS = ("gpu_thermal", "gpu_errors")

# The bench injects a fault every ~40 s on one model, far denser than any production fault rate, so the
# guards meant for a fault that keeps coming back (cooldown, rate limit, flapping) would judge the
# *sequence* instead of each fault. They run with windows shorter than one phase here; the guards
# themselves are tested in tests/remediation/test_policy.py.
BENCH_POLICY: dict[str, Any] = {"cooldown_seconds": 15, "rate_window_seconds": 30, "flap_window_seconds": 30}


def default_actions() -> dict[str, ActionKind]:
    """Root cause -> the action of its strongest rule in the default pack (what the bench expects)."""
    best: dict[str, tuple[float, ActionKind]] = {}
    for lr in RuleEngine.load([DEFAULT_PACK]).rules:
        t = lr.rule.then
        if t.weight > best.get(t.root_cause, (0.0, ActionKind.NOTIFY))[0]:
            best[t.root_cause] = (t.weight, t.action)
    return {cause: action for cause, (_, action) in best.items()}


def harm_seconds(name: str) -> float | None:
    """Seconds from injection to a slow fault's point of harm, from its bench parameters (else defaults)."""
    if name not in HARM:
        return None
    from incidentd.injection import FAULTS, parse_params

    params = parse_params(FAULTS[name], PARAMS.get(name, []))   # the fault's model: defaults filled in
    limit_key, rate_key = HARM[name]
    return float(getattr(params, limit_key)) / float(getattr(params, rate_key))


def taxonomy(names: list[str] | None = None) -> list[Fault]:
    from incidentd.injection import FAULTS, InjectError, clear, inject

    actions = default_actions()
    chosen = names or [*PARAMS, *GPU_FAULTS]
    out = []
    for name in chosen:
        spec = FAULTS[name]

        def do(d: Demo, name: str = name) -> None:
            extra = [f"gpu_state={d.gpu_state}"] if name in GPU_FAULTS else []
            inject(name, PARAMS.get(name, []) + extra, d.model_url, token=d.admin_token)

        def undo(d: Demo, name: str = name) -> None:
            try:
                clear([f"gpu_state={d.gpu_state}"], d.model_url, token=d.admin_token)
            except InjectError as e:   # the server may be down or restarting (crash): nothing left to clear
                d.say(f"clear after {name}: {e}")

        action = actions.get(spec.simulates, ActionKind.NOTIFY)
        expected = EXPECTED_ACTION[name] if name in EXPECTED_ACTION else action if action.changes_model else None
        out.append(Fault(name, spec.domain, expected, do, undo, spec.simulates))
    return out


@dataclass(frozen=True, slots=True)
class BenchReport:
    runs: list[FaultResult]
    control_incidents: int
    control_actions: int
    extra_incidents: int
    harm: dict[str, float] | None = None     # slow fault -> seconds from injection to its point of harm

    def summary(self) -> dict[str, Any]:
        runs = self.runs

        def median(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 2) if xs else None

        per_fault = []
        harm = self.harm or {}
        for name in dict.fromkeys(r.fault for r in runs):
            rs = [r for r in runs if r.fault == name]
            entry: dict[str, Any] = {
                "fault": name, "runs": len(rs),
                "domain_correct": sum(r.domain == r.expected_domain for r in rs),
                "root_cause_correct": sum(r.root_cause == r.expected_root_cause for r in rs),
                "mttd_median_s": median([r.detect_seconds for r in rs if r.detect_seconds is not None]),
                "mttr_median_s": median([r.recover_seconds for r in rs if r.recover_seconds is not None]),
            }
            if name in harm:
                # Slow faults: how long before the point of harm the incident opened (negative: too late).
                margins = [harm[name] - r.detect_seconds for r in rs if r.detect_seconds is not None]
                entry.update(harm_s=round(harm[name], 2), margin_median_s=median(margins),
                             detected_before_harm=sum(m > 0 for m in margins))
            per_fault.append(entry)
        n = len(runs)
        out: dict[str, Any] = {
            "runs": n,
            "domain_accuracy": round(sum(r.domain == r.expected_domain for r in runs) / n, 4) if n else 0.0,
            "root_cause_accuracy": round(sum(r.root_cause == r.expected_root_cause for r in runs) / n, 4)
            if n else 0.0,
            "mttd_median_s": median([r.detect_seconds for r in runs if r.detect_seconds is not None]),
            "mttr_median_s": median([r.recover_seconds for r in runs if r.recover_seconds is not None]),
            "false_incidents": self.control_incidents + self.extra_incidents,
            "false_remediations": self.control_actions + sum(r.false_remediation for r in runs),
            "per_fault": per_fault,
        }
        slow = [f for f in per_fault if "harm_s" in f]
        if slow:
            out["slow_fault_margins"] = {f["fault"]: f["margin_median_s"] for f in slow}
        return out


def run_bench(fast: bool, repeat: int, names: list[str] | None, progress: Callable[[str], None],
              workdir: Any = None) -> dict[str, Any]:
    faults = taxonomy(names)
    demo = Demo(fast=fast, workdir=workdir, progress=progress, plots=False, remediation=BENCH_POLICY)
    runs: list[FaultResult] = []
    control_incidents = control_actions = extra = 0
    try:
        demo.start()
        demo.warm_up()
        for r in range(repeat):
            progress(f"round {r + 1}/{repeat}")
            ci, ca = demo.control()
            control_incidents += ci
            control_actions += ca
            for fault in faults:
                res, more = demo.run_phase(fault)
                runs.append(res)
                extra += more
    finally:
        demo.stop()
    harm = {f.name: h for f in faults if (h := harm_seconds(f.name)) is not None}
    report = BenchReport(runs, control_incidents, control_actions, extra, harm).summary()
    if workdir is None:
        demo.cleanup()
    return report
