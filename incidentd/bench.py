"""`incidentd bench faults`: every fault of the taxonomy, N times, plus healthy controls, scored.

It drives the same stack as the demo (model server supervised by the service, sidecar, traffic with
delayed labels) and injects faults through `incidentd inject`'s catalogue, so a result here is what a
user reproduces by hand with `incidentd inject FAULT --target URL`.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from diagnosis.rules import DEFAULT_PACK, RuleEngine
from diagnosis.types import ActionKind
from incidentd.demo import NOT_ON_SERVER, Demo, Fault, FaultResult
from remediation.types import ActionStatus

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


# MLServer's process is about 6x smaller than our server's (measured: 157 MB resident against ~900 MB), so our
# leak (6 MB/s) passes 1.5x its baseline in 13 s, memory pressure by any reading, before a trend can be told
# from a step. On MLServer the leak grows as slowly relative to its size (1 MB/s) toward the memory limit the
# demo gives it (1 GiB, as a container limit would): harm at 800 MB leaked.
SERVER_PARAMS: dict[str, dict[str, list[str]]] = {
    "ours": {}, "mlserver": {"memory_leak": ["rate=1", "limit_megabytes=800"]}, "torchserve": {}, "triton": {},
}


def params_for(name: str, server: str = "ours") -> list[str]:
    return SERVER_PARAMS[server].get(name, PARAMS.get(name, []))


def harm_seconds(name: str, server: str = "ours") -> float | None:
    """Seconds from injection to a slow fault's point of harm, from its bench parameters (else defaults)."""
    if name not in HARM:
        return None
    from incidentd.injection import FAULTS, parse_params

    params = parse_params(FAULTS[name], params_for(name, server))   # the fault's model: defaults filled in
    limit_key, rate_key = HARM[name]
    return float(getattr(params, limit_key)) / float(getattr(params, rate_key))


def _on_server(name: str, server: str) -> tuple[Callable[[Demo], None], Callable[[Demo], None]]:
    """How a fault of the taxonomy is injected on a third-party server: in the traffic (what clients send
    and label), in the served model instance (the demo's fault hook), or in the simulated GPU file."""
    from incidentd.demo import DRIFT_FEATURES
    from incidentd.injection import update_gpu_state

    traffic: dict[str, tuple[Callable[[Demo], None], Callable[[Demo], None]]] = {
        "covariate_drift": (lambda d: d.traffic.set_drift(0.6, DRIFT_FEATURES, shift=7.0),
                            lambda d: d.traffic.set_drift(0.0)),
        "unit_change": (lambda d: d.traffic.set_drift(1.0, DRIFT_FEATURES[:1], scale=1000.0),
                        lambda d: d.traffic.set_drift(0.0)),
        "unseen_categories": (lambda d: d.traffic.set_unseen_codes(0.3, DRIFT_FEATURES),
                              lambda d: d.traffic.set_drift(0.0)),
        "null_features": (lambda d: d.traffic.set_nulls(0.3), lambda d: d.traffic.set_nulls(0.0)),
        "concept_drift": (lambda d: d.traffic.set_concept_drift(0.6, 1), lambda d: d.traffic.set_concept_drift(0.0)),
        "label_stall": (lambda d: d.traffic.set_label_stall(True), lambda d: d.traffic.set_label_stall(False)),
    }
    if name in traffic:
        return traffic[name]
    if name == "bad_version":
        return (lambda d: d.stack.deploy("v2")), (lambda d: None)   # the rollback is the cure
    in_instance = {"cpu_contention": "starvation", "latency": "latency", "memory_pressure": "memory_balloon",
                   "memory_leak": "memory_leak", "latency_creep": "latency_creep", "disk_fill": "disk_fill"}
    if name in in_instance:
        from incidentd.injection import FAULTS, parse_params

        # the same parameters as on our server but for the leak's pace (SERVER_PARAMS); a leak stops at its
        # limit there: an OOM exit would take all of MLServer down
        params = parse_params(FAULTS[name], params_for(name, server)).model_dump(mode="json")
        if name == "memory_leak":
            params["oom"] = False
        kind = in_instance[name]
        return (lambda d: d.stack.inject(kind, params)), (lambda d: d.stack.clear())
    if name in GPU_FAULTS:
        from incidentd.injection import inject

        def heat(d: Demo) -> None:   # the catalogue's own injection: it writes the GPU file, no server call
            inject(name, [f"gpu_state={d.gpu_state}"], d.model_url)

        def cool(d: Demo) -> None:   # the GPU file only: `incidentd inject clear` would call our /admin API
            update_gpu_state(d.gpu_state, None)

        return heat, cool
    raise ValueError(f"fault {name} does not apply on {server}: {NOT_ON_SERVER[server].get(name, 'no injector')}")


def applicable(server: str) -> list[str]:
    """The taxonomy's faults that run on ``server``, in the bench's order."""
    return [n for n in [*PARAMS, *GPU_FAULTS] if n not in NOT_ON_SERVER[server]]


def taxonomy(names: list[str] | None = None, server: str = "ours") -> list[Fault]:
    from incidentd.injection import FAULTS, InjectError, clear, inject

    actions = default_actions()
    chosen = names or applicable(server)
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

        inject_it, clear_it = _on_server(name, server) if server != "ours" else (do, undo)
        action = actions.get(spec.simulates, ActionKind.NOTIFY)
        expected = EXPECTED_ACTION[name] if name in EXPECTED_ACTION else action if action.changes_model else None
        out.append(Fault(name, spec.domain, expected, inject_it, clear_it, spec.simulates))
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
            "domain_accuracy": round(sum(r.domain == r.expected_domain for r in runs) / n, 4) if n else None,
            "root_cause_accuracy": round(sum(r.root_cause == r.expected_root_cause for r in runs) / n, 4)
            if n else None,
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


# ---------------------------------------------------------------- compound faults

# Two faults from different domains overlapping in time: two pairs for each pair of domains.
COMPOUND_PAIRS: list[tuple[str, str]] = [
    ("bad_version", "covariate_drift"), ("nonfinite_weights", "unit_change"),          # model + data
    ("bad_version", "cpu_contention"), ("exploding_weights", "memory_pressure"),       # model + hardware
    ("covariate_drift", "cpu_contention"), ("null_features", "gpu_thermal"),           # data + hardware
]
# The second fault starts once the first one's incident is open (or after this long): they overlap.
COMPOUND_STAGGER_SECONDS = 20.0


@dataclass(slots=True)
class PairResult:
    """One compound run: both faults, what was ranked and what was done about each."""

    pair: tuple[str, str]
    domains: tuple[str, str]
    expected: dict[str, str | None]                  # root cause -> the action expected on the model (or None)
    ranked: list[str] = field(default_factory=list)  # every root cause an incident of the run ranked, at any time
    actions: list[dict[str, Any]] = field(default_factory=list)   # kind, root_cause, status, verify_signals
    incidents: list[str] = field(default_factory=list)
    detect_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def both_ranked(self) -> bool:
        return all(cause in self.ranked for cause in self.expected)

    @property
    def harmful(self) -> list[dict[str, Any]]:
        """Actions on the model no cause of the pair called for, or that were reverted as harmful."""
        return [a for a in self.actions
                if self.expected.get(a["root_cause"]) != a["kind"] or a["status"] == ActionStatus.REVERTED]

    @property
    def verified_on_own_cause(self) -> bool:
        return all(a["status"] == ActionStatus.VERIFIED and a["root_cause"] in self.expected for a in self.actions)

    @property
    def right(self) -> bool:
        return self.both_ranked and self.verified_on_own_cause and not self.harmful

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "pair": list(self.pair), "domains": list(self.domains),
                "both_ranked": self.both_ranked, "verified_on_own_cause": self.verified_on_own_cause,
                "harmful_actions": len(self.harmful), "right": self.right}


def compound_pairs(names: list[tuple[str, str]] | None = None) -> list[tuple[Fault, Fault]]:
    pairs = names or COMPOUND_PAIRS
    faults = {f.name: f for f in taxonomy(sorted({n for p in pairs for n in p}))}
    for a, b in pairs:
        if faults[a].expected_domain == faults[b].expected_domain:
            raise ValueError(f"compound pair {a}+{b}: both faults are in the {faults[a].expected_domain} domain")
    return [(faults[a], faults[b]) for a, b in pairs]


def _executed(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"kind": a["kind"], "root_cause": a.get("root_cause", ""), "status": a["status"],
             "verify_signals": a.get("verify_signals", [])}
            for a in detail["actions"] if ActionStatus(a["status"]).executed]


def run_pair(demo: Demo, first: Fault, second: Fault) -> PairResult:
    """Inject ``first``, then ``second`` while the first is still on; watch every incident until both causes
    are ranked and every action finished (or the phase times out); clear both and wait for quiet."""
    expected = {f.expected_root_cause or f.name: (f.expected_action.value if f.expected_action else None)
                for f in (first, second)}
    res = PairResult((first.name, second.name), (first.expected_domain, second.expected_domain), expected)
    demo.say(f"compound {first.name} + {second.name}: injecting {first.name}")
    started = time.time()
    first.inject(demo)
    stagger_end = time.monotonic() + COMPOUND_STAGGER_SECONDS
    while time.monotonic() < stagger_end and not demo.incidents_since(started - 1.0):
        demo.wait(0.5)
    demo.say(f"compound {first.name} + {second.name}: injecting {second.name}")
    second.inject(demo)
    deadline = time.monotonic() + 2 * demo.t.phase_timeout
    details: dict[str, dict[str, Any]] = {}
    ranked: set[str] = set()      # every root cause ranked at some point (a cleared cause leaves the ranking)
    while time.monotonic() < deadline:
        demo.wait(1.0)
        incs = demo.incidents_since(started - 1.0)
        details = {i["id"]: demo.api("GET", f"/incidents/{i['id']}") for i in incs}
        ranked |= {h["root_cause"] for d in details.values() for h in d["hypotheses"]}
        actions = [a for d in details.values() for a in d["actions"]]
        wanted = [cause for cause, action in expected.items() if action is not None]
        acted = {a.get("root_cause") for a in actions}
        finished = all(ActionStatus(a["status"]).finished for a in actions)
        escalated = any(d["escalated"] for d in details.values())
        if all(c in ranked for c in expected) and finished and (escalated or all(c in acted for c in wanted)):
            break
    for fault in (second, first):
        fault.clear(demo)
    resolve_deadline = time.monotonic() + demo.t.phase_timeout
    for inc_id in list(details):
        detail = demo.api("GET", f"/incidents/{inc_id}")
        while detail["status"] != "resolved" and time.monotonic() < resolve_deadline:
            demo.wait(1.0)
            detail = demo.api("GET", f"/incidents/{inc_id}")
        if detail["status"] != "resolved":
            res.notes.append(f"incident {inc_id} did not resolve by itself in time; resolved by the bench")
            demo.api("POST", f"/incidents/{inc_id}/resolve", {"note": "phase timeout"})
        details[inc_id] = detail
    res.incidents = list(details)
    res.ranked = sorted(ranked | {h["root_cause"] for d in details.values() for h in d["hypotheses"]})
    res.actions = [a for d in details.values() for a in _executed(d)]
    if details:
        res.detect_seconds = round(max(0.0, min(d["opened_at"] for d in details.values()) - started), 2)
    demo.say(f"compound {first.name} + {second.name}: ranked {res.ranked}; actions "
             f"{[(a['kind'], a['root_cause'], a['status']) for a in res.actions] or 'none'}; "
             f"{'RIGHT' if res.right else 'WRONG'}")
    demo.wait(demo.t.settle)
    if not demo.wait_quiet(demo.t.phase_timeout):
        demo.say("signals still active after the settle period; continuing")
    return res


def compound_summary(pairs: list[PairResult]) -> dict[str, Any]:
    n = len(pairs)
    return {"compound_runs": n,
            "compound_accuracy": round(sum(p.right for p in pairs) / n, 4) if n else None,
            "compound_false_remediations": sum(len(p.harmful) for p in pairs),
            "compound": [p.public() for p in pairs]}


def run_bench(fast: bool, repeat: int, names: list[str] | None, progress: Callable[[str], None],
              workdir: Any = None, compound: bool = False, server: str = "ours",
              pair_names: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The single-fault taxonomy, or with ``compound`` the compound pairs instead (each with controls;
    ``pair_names`` picks some of them); ``server`` names the model server the faults hit (the faults that
    apply there)."""
    faults = [] if compound else taxonomy(names, server)
    pairs = compound_pairs(pair_names) if compound else []
    demo = Demo(fast=fast, workdir=workdir, progress=progress, plots=False, remediation=BENCH_POLICY,
                server=server)
    runs: list[FaultResult] = []
    pair_results: list[PairResult] = []
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
            for first, second in pairs:
                pair_results.append(run_pair(demo, first, second))
    finally:
        demo.stop()
    harm = {f.name: h for f in faults if (h := harm_seconds(f.name, server)) is not None}
    report = BenchReport(runs, control_incidents, control_actions, extra, harm).summary()
    if server != "ours":   # on our own server the object stays exactly the documented one
        report["server"] = server
        report["not_applicable"] = NOT_ON_SERVER[server]
    if compound:
        report.update(compound_summary(pair_results))
        report["false_remediations"] += report["compound_false_remediations"]
    if workdir is None:
        demo.cleanup()
    return report
