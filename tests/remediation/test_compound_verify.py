"""Each fix is verified on its own symptoms when several causes are at once (remediation.verify, issue 15)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import cast

import pytest

from diagnosis.signals import ProportionSpec, SourceLike
from diagnosis.types import ActionKind, FaultDomain, Hypothesis
from remediation.types import ActionMode, ActionRecord, ActionStatus
from remediation.verify import Outcome, judge, own_symptoms, regroup

RELEASE = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
                     ("ev-acc", "chg-1"), explains=("accuracy", "prediction_drift"))
DRIFT = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, ActionKind.NOTIFY, "inputs drift",
                   ("ev-drift",), explains=("accuracy", "input_drift", "prediction_drift"))
# the drift as it joins an incident while the accuracy test is not significant: it explains only the drift,
# but it moves accuracy too
DRIFT_JOINED = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, ActionKind.NOTIFY, "inputs drift",
                          ("ev-drift",), explains=("input_drift",),
                          affects=("accuracy", "input_drift", "prediction_drift"))
CPU = Hypothesis(FaultDomain.HARDWARE, "hardware.cpu_contention", 0.85, ActionKind.RESTART, "starved",
                 ("ev-lat", "ev-cpu"), explains=("latency", "process_cpu"))
WEIGHTS = Hypothesis(FaultDomain.MODEL, "model.nonfinite_weights", 0.95, ActionKind.CLAMP, "NaN weights",
                     ("ev-nan", "ev-w"), explains=("accuracy", "nonfinite_outputs", "weights_nonfinite"))
SCHEMA = Hypothesis(FaultDomain.DATA, "data.schema_change", 0.97, ActionKind.NOTIFY, "units",
                    ("ev-unit",), explains=("accuracy", "unit_change"))


def test_a_rollback_during_a_data_shift_is_judged_on_accuracy_by_version_not_on_the_shifted_inputs() -> None:
    own = own_symptoms(RELEASE, [RELEASE, DRIFT], {"accuracy", "prediction_drift"})
    # prediction drift is the data's as much as the release's: it says nothing about the rollback
    assert own.verify == ("accuracy",) and own.shared == ("accuracy",)


def test_a_clamp_beside_a_schema_change_is_verified_on_the_weights_and_outputs_only() -> None:
    own = own_symptoms(WEIGHTS, [WEIGHTS, SCHEMA], {"accuracy", "nonfinite_outputs", "weights_nonfinite"})
    assert own.verify == ("nonfinite_outputs", "weights_nonfinite") and own.shared == ()


def test_a_restart_beside_drift_is_verified_on_latency_and_cpu_and_host_signals_never_count() -> None:
    own = own_symptoms(CPU, [DRIFT, CPU], {"latency", "process_cpu", "host_cpu"}, {"host_cpu"})
    assert own.verify == ("latency", "process_cpu") and own.shared == ()


def test_with_one_cause_the_action_is_verified_on_its_evidence_as_before() -> None:
    assert own_symptoms(RELEASE, [RELEASE], {"accuracy"}).verify == ("accuracy",)
    # a symptom the action cannot change is no yardstick, unless it is all there is
    assert own_symptoms(CPU, [CPU], {"latency", "input_drift"}).verify == ("latency",)
    assert own_symptoms(DRIFT, [DRIFT], {"input_drift"}).verify == ("input_drift",)


def record(kind: ActionKind, cause: str, signals: tuple[str, ...]) -> ActionRecord:
    return ActionRecord(id="act-1", incident_id="inc-1", model="digits", kind=kind, mode=ActionMode.AUTO,
                        status=ActionStatus.VERIFYING, reason="", idempotency_key="k", created_at=0.0,
                        executed_at=100.0, verify_deadline=200.0, verify_signals=signals, root_cause=cause)


def test_a_cause_that_appears_after_the_action_regroups_its_symptoms() -> None:
    rec = record(ActionKind.ROLLBACK, RELEASE.root_cause, ("accuracy", "prediction_drift"))
    again = regroup(rec, {"accuracy", "input_drift", "prediction_drift"})
    assert (again.verify_signals, again.shared_signals) == (("accuracy",), ("accuracy",))
    restart = record(ActionKind.RESTART, CPU.root_cause, ("latency",))
    assert regroup(restart, {"latency"}) == restart, "nothing of its own left: judged as before"
    assert regroup(rec, set()) == rec


def test_a_symptom_another_cause_explains_never_makes_an_action_worse() -> None:
    rec = record(ActionKind.RESTART, CPU.root_cause, ("latency",))

    def recovered(name: str, since: float) -> bool | None:
        return name == "latency"

    active = {"accuracy": 150.0}          # the drift's accuracy drop, noticed after the restart
    kept = judge(rec, recovered, {"latency", "accuracy"}, active, 160.0, 2.0, 40.0, True,
                 attributed={"accuracy"})
    assert kept.outcome is Outcome.VERIFIED
    blamed = judge(rec, recovered, {"latency", "accuracy"}, active, 160.0, 2.0, 40.0, True)
    assert blamed.outcome is Outcome.WORSE and blamed.worse == ("accuracy",)


@dataclass(frozen=True)
class Series:
    labels: tuple[tuple[str, str], ...]
    timestamps: tuple[float, ...]
    values: tuple[float, ...]


class Counters:
    """Cumulative correct/labeled counters per version: ``rates`` maps version -> (start, end, accuracy)."""

    def __init__(self, rates: dict[str, tuple[float, float, float]], per_second: int = 10):
        self.rates, self.per_second = rates, per_second

    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]:
        out = []
        for version, (t0, t1, acc) in self.rates.items():
            ts = [float(t) for t in range(int(t0), int(t1) + 1) if start < t <= end]
            k = acc if metric == "correct" else 1.0
            vals = [round((t - t0 + 1) * self.per_second * k) for t in ts]
            if ts:
                out.append(Series((("version", version),), tuple(ts), tuple(float(v) for v in vals)))
        return out


def spec_after(rates: dict[str, tuple[float, float, float]]) -> ProportionSpec:
    spec = ProportionSpec("accuracy", "correct", "labeled", direction="drop", window_seconds=60.0)
    src = Counters(rates)
    for now in (100.0, 130.0, 160.0):
        spec.observe(src, "digits", now, 1.0)
    return spec


def test_the_restored_version_is_judged_against_the_version_it_replaced_on_the_same_inputs() -> None:
    # v2 ran at 10% until the rollback at t=100; v1 then serves drifted inputs at 70%, below its healthy
    # baseline, but far above what v2 did: what the version lost is back
    spec = spec_after({"v2": (0.0, 100.0, 0.1), "v1": (101.0, 160.0, 0.7)})
    assert spec.recovered_by_version("digits", 100.0, 160.0, "v1", "v2") is True
    no_better = spec_after({"v2": (0.0, 100.0, 0.1), "v1": (101.0, 160.0, 0.1)})
    assert no_better.recovered_by_version("digits", 100.0, 160.0, "v1", "v2") is False
    # too few rows of the restored version yet: not known, never read as recovered
    assert spec.recovered_by_version("digits", 158.0, 160.0, "v1", "v2") is None


# ---------------------------------------------------------------- the runner, on a real model server

class AccuracyHeldDown(ProportionSpec):
    """Accuracy a data shift holds below its healthy baseline, which the restored version still beats."""

    def __init__(self) -> None:
        super().__init__("accuracy", "correct", "labeled", direction="drop")
        self.asked: list[tuple[str, str]] = []

    def recovered(self, source, model, since, now, version=None):  # type: ignore[no-untyped-def]
        return False

    def recovered_by_version(self, model, since, now, version, previous):  # type: ignore[no-untyped-def]
        self.asked.append((version, previous))
        return True


def test_a_rollback_during_drift_is_verified_by_version_and_the_incident_stays_open_on_the_drift(
        tmp_path, registry_dir) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from diagnosis.lifecycle import open_incident
    from diagnosis.types import IncidentStatus, TimelineKind
    from incidentd.store import Store
    from remediation.actions import ActionContext
    from remediation.executors import ModelServerAdmin
    from remediation.policy import Policy
    from remediation.runner import ActionRunner
    from tests.model_server.conftest import start_server

    server = start_server(registry_dir)
    try:
        httpx.post(server.url + "/admin/load", json={"version": "v2"}).raise_for_status()
        store = Store(tmp_path / "db.sqlite")
        rem = ActionRunner(store, Policy(verify_seconds=30.0), ActionContext(ModelServerAdmin(server.url)))
        inc, entries = open_incident("digits", [RELEASE, DRIFT_JOINED], ["ev-acc", "ev-drift"], time.time(), [])
        store.save_incident(inc, entries)
        # started while the release was the only cause: verified on accuracy, nothing shared yet; the drift
        # is a cause of the incident by the time the rollback is judged
        inc, rec = rem.consider(inc, RELEASE, ["accuracy"], time.time())
        assert rec is not None and rec.shared_signals == ()
        deadline = time.monotonic() + 30
        while rem.records()[0].status is not ActionStatus.VERIFYING and time.monotonic() < deadline:
            time.sleep(0.1)
        spec = AccuracyHeldDown()
        no_source = cast(SourceLike, None)   # the spec above answers without reading a metric source
        inc, entries = rem.verify(inc, {"accuracy": spec}, no_source, time.time(), "v1", grace=0.0)
        assert spec.asked == [("v1", "v2")], "judged against the version it replaced, not the baseline"
        assert rem.records()[0].status is ActionStatus.VERIFIED
        assert rem.records()[0].shared_signals == ("accuracy",)
        assert "judged by version: accuracy" in entries[0].message
        assert [e.kind for e in entries] == [TimelineKind.CAUSE_FIXED]
        assert inc.status is IncidentStatus.OPEN and not inc.escalated
        assert "model.bad_version is fixed" in entries[0].message
        assert "data.covariate_drift (data, notify: no action on the model)" in entries[0].message
        rem.close()
        store.close()
    finally:
        server.stop()


class NoFreshLabels(ProportionSpec):
    """Accuracy with no labeled rows since the action (a starved server answers few requests), until
    ``labels_back`` says they came back, healthy."""

    def __init__(self) -> None:
        super().__init__("accuracy", "correct", "labeled", direction="drop")
        self.labels_back = False

    def recovered(self, source, model, since, now, version=None):  # type: ignore[no-untyped-def]
        return True if self.labels_back else None

    def recovered_by_version(self, model, since, now, version, previous):  # type: ignore[no-untyped-def]
        return self.recovered(None, model, since, now)


@contextlib.contextmanager
def rolled_back(tmp_path, registry_dir, causes):  # type: ignore[no-untyped-def]
    """A real model server serving v2, an incident with ``causes``, and its rollback (verified on accuracy
    over 30 s) executed and in verification."""
    import httpx

    from diagnosis.lifecycle import open_incident
    from incidentd.store import Store
    from remediation.actions import ActionContext
    from remediation.executors import ModelServerAdmin
    from remediation.policy import Policy
    from remediation.runner import ActionRunner
    from tests.integration.conftest import wait_until
    from tests.model_server.conftest import start_server

    server = start_server(registry_dir)
    store = Store(tmp_path / "db.sqlite")
    rem = ActionRunner(store, Policy(verify_seconds=30.0, cooldown_seconds=0),
                       ActionContext(ModelServerAdmin(server.url)))
    try:
        httpx.post(server.url + "/admin/load", json={"version": "v2"}).raise_for_status()
        inc, entries = open_incident("digits", causes, [e for h in causes for e in h.evidence_ids], time.time(), [])
        store.save_incident(inc, entries)
        inc, rec = rem.consider(inc, RELEASE, ["accuracy"], time.time())
        assert rec is not None
        assert wait_until(lambda: rem.records()[0].status is ActionStatus.VERIFYING, 30), "the rollback never ran"
        yield rem, store, inc
    finally:
        rem.close()
        store.close()
        server.stop()


NO_SOURCE = cast(SourceLike, None)   # the specs here answer without reading a metric source


def restart_for_cpu(incident_id: str, started: float, status: ActionStatus,
                    executed_at: float | None = None) -> ActionRecord:
    """The restart the starvation's cause gets, as the store holds it, started at ``started``."""
    return ActionRecord(id="act-restart", incident_id=incident_id, model="digits", kind=ActionKind.RESTART,
                        mode=ActionMode.AUTO, status=status, reason="", idempotency_key="k2", created_at=started,
                        executed_at=executed_at, root_cause=CPU.root_cause)


def test_a_rollback_without_labels_while_the_server_starves_waits_for_the_restart_then_is_verified(
        tmp_path, registry_dir) -> None:  # type: ignore[no-untyped-def]
    from diagnosis.types import TimelineKind

    with rolled_back(tmp_path, registry_dir, [RELEASE, CPU]) as (rem, store, inc):
        t0 = rem.records()[0].executed_at
        spec = NoFreshLabels()
        specs = {"accuracy": spec}
        # a quarter of the window on and no label since: the rollback waits for data, and no longer holds
        # back the restart the starvation needs (which is what brings the labels back)
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 10, "v1", grace=0.0)
        assert entries == [] and rem.records()[0].awaiting_data_since == t0 + 10
        decide = rem.policy.decide(ActionKind.RESTART, CPU.confidence, rem.records(incident_id=inc.id),
                                   rem.records(model="digits"), False, t0 + 10, root_cause=CPU.root_cause)
        assert decide.allowed, decide.reason
        # the window ends before the restart ran: verification waits a window more, nobody is paged
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 31, "v1", grace=0.0)
        rb = rem.records()[0]
        assert rb.status is ActionStatus.VERIFYING and not inc.escalated
        assert rb.verify_deadline == pytest.approx(t0 + 61)
        assert [e.kind for e in entries] == [TimelineKind.ACTION_VERIFICATION_EXTENDED]
        assert "no fresh data for accuracy" in entries[0].message
        assert "hardware.cpu_contention may be holding it back" in entries[0].message
        # the restart ran at t0+40: the rollback gets one window after it
        store.save_action(restart_for_cpu(inc.id, t0 + 40, ActionStatus.VERIFIED, executed_at=t0 + 40))
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 62, "v1", grace=0.0)
        assert rem.records()[0].verify_deadline == pytest.approx(t0 + 70)
        # the labels come back: judged on them, verified
        spec.labels_back = True
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 65, "v1", grace=0.0)
        rb = rem.records()[0]
        assert rb.status is ActionStatus.VERIFIED and not inc.escalated
        assert [e["event"] for e in rb.to_dict()["audit"]][-4:] == [
            "awaiting_data", "verification_extended", "verification_extended", "verified"]


def test_a_rollback_that_never_gets_data_is_not_recovered_by_three_windows_and_never_read_as_healthy(
        tmp_path, registry_dir) -> None:  # type: ignore[no-untyped-def]
    with rolled_back(tmp_path, registry_dir, [RELEASE, CPU]) as (rem, _store, inc):
        t0 = rem.records()[0].executed_at
        specs = {"accuracy": NoFreshLabels()}
        for now in (t0 + 31, t0 + 62):          # the restart never runs: waiting, a window at a time
            inc, _ = rem.verify(inc, specs, NO_SOURCE, now, "v1", grace=0.0)
        assert rem.records()[0].verify_deadline == pytest.approx(t0 + 90), "three windows at most"
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 91, "v1", grace=0.0)
        assert rem.records()[0].status is ActionStatus.NOT_RECOVERED and inc.escalated
        assert "no fresh data for accuracy" in entries[-1].message


class StillDown(ProportionSpec):
    """A harm signal (the target down) that has not recovered."""

    def __init__(self) -> None:
        super().__init__("target_down", "down", "scrapes", direction="rise")

    def recovered(self, source, model, since, now, version=None):  # type: ignore[no-untyped-def]
        return False


def test_a_restart_for_another_cause_answers_for_its_own_downtime_not_the_rollback_beside_it(
        tmp_path, registry_dir) -> None:  # type: ignore[no-untyped-def]
    with rolled_back(tmp_path, registry_dir, [RELEASE, CPU]) as (rem, store, inc):
        t0 = rem.records()[0].executed_at
        specs = {"accuracy": NoFreshLabels(), "target_down": StillDown()}
        inc, _ = rem.verify(inc, specs, NO_SOURCE, t0 + 12, "v1", grace=0.0)
        # the restart for the starvation starts at t0+26; the server is down while it comes back
        store.save_action(restart_for_cpu(inc.id, t0 + 26, ActionStatus.EXECUTING))
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 30, "v1", grace=0.0,
                                  active={"target_down": t0 + 27})
        assert rem.records()[0].status is ActionStatus.VERIFYING and not inc.escalated, entries


def test_a_new_symptom_after_a_rollback_with_no_later_action_still_makes_it_worse(
        tmp_path, registry_dir) -> None:  # type: ignore[no-untyped-def]
    with rolled_back(tmp_path, registry_dir, [RELEASE, CPU]) as (rem, _store, inc):
        t0 = rem.records()[0].executed_at
        specs = {"accuracy": NoFreshLabels(), "target_down": StillDown()}
        inc, entries = rem.verify(inc, specs, NO_SOURCE, t0 + 30, "v1", grace=0.0,
                                  active={"target_down": t0 + 27})
        assert rem.records()[0].status is ActionStatus.REVERTED and inc.escalated
        assert "target_down started after the rollback" in entries[-1].message


class NoBetter(AccuracyHeldDown):
    """The restored version does no better than the one it replaced."""

    def recovered_by_version(self, model, since, now, version, previous):  # type: ignore[no-untyped-def]
        return False


def test_a_rollback_whose_window_ends_below_baseline_is_judged_by_version_before_a_shift_is_diagnosed(
        tmp_path, registry_dir) -> None:  # type: ignore[no-untyped-def]
    from diagnosis.types import IncidentStatus, TimelineKind

    # the data shift that holds accuracy down has not been diagnosed when the window ends: only the release
    with rolled_back(tmp_path, registry_dir, [RELEASE]) as (rem, _store, inc):
        t0 = rem.records()[0].executed_at
        spec = AccuracyHeldDown()
        inc, entries = rem.verify(inc, {"accuracy": spec}, NO_SOURCE, t0 + 31, "v1", grace=0.0)
        rb = rem.records()[0]
        assert rb.status is ActionStatus.VERIFIED and rb.shared_signals == ("accuracy",)
        assert spec.asked == [("v1", "v2")]
        # half a recovery is never a mitigation: the incident stays open and says what is left
        assert inc.status is IncidentStatus.OPEN and not inc.escalated
        assert [e.kind for e in entries] == [TimelineKind.CAUSE_FIXED]
        assert "judged by version: accuracy" in entries[0].message
        assert "accuracy still below its baseline with no other cause found yet" in entries[0].message


@pytest.mark.parametrize("spec", [NoFreshLabels, NoBetter], ids=["without-data", "no-better-than-the-bad-one"])
def test_with_one_cause_a_rollback_is_not_recovered_when_its_window_ends_without_data_or_gain(
        tmp_path, registry_dir, spec) -> None:  # type: ignore[no-untyped-def]
    # without data, nothing else to wait for; a restored version no better than the bad one did not help
    with rolled_back(tmp_path, registry_dir, [RELEASE]) as (rem, _store, inc):
        t0 = rem.records()[0].executed_at
        inc, _ = rem.verify(inc, {"accuracy": spec()}, NO_SOURCE, t0 + 31, "v1", grace=0.0)
        assert rem.records()[0].status is ActionStatus.NOT_RECOVERED and inc.escalated
