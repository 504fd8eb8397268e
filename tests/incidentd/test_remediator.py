"""Remediation under policy on a real model server: dry-run, approval, verification, escalation, audit."""
from __future__ import annotations

import time

import httpx
import pytest

from diagnosis.lifecycle import open_incident
from diagnosis.types import FaultDomain, Hypothesis
from incidentd.errors import Conflict
from incidentd.remediator import Remediator
from incidentd.store import Store
from remediation.actions import ActionContext
from remediation.executors import ModelServerAdmin
from remediation.policy import Policy
from remediation.types import ActionKind, ActionMode, ActionStatus
from tests.model_server.conftest import start_server

BAD_VERSION = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, "rollback", "v2 is worse",
                         evidence_ids=("ev-acc",), rules=("accuracy-drop-after-deploy",))


class Verdict:
    """The accuracy signal's verdict, set by the test (signals themselves are tested in tests/diagnosis)."""

    def __init__(self, value):
        self.value = value

    def recovered(self, source, model, since, now, version=None):
        return self.value


@pytest.fixture()
def server(registry_dir):
    s = start_server(registry_dir)
    httpx.post(s.url + "/admin/load", json={"version": "v2"}).raise_for_status()
    yield s
    s.stop()


def setup(tmp_path, server, **policy):
    store = Store(tmp_path / "db.sqlite")
    rem = Remediator(store, Policy(verify_seconds=1.0, **policy), ActionContext(ModelServerAdmin(server.url)))
    inc, entries = open_incident("digits", [BAD_VERSION], ["ev-acc"], time.time(), [])
    store.save_incident(inc, entries)
    return store, rem, inc


def wait_status(rem, action_id, statuses, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = rem.records()[0]
        if rec.status in statuses:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"action stayed {rem.records()[0].status}")


def current(server):
    return httpx.get(server.url + "/admin/versions").json()["current"]


def test_dry_run_plans_and_records_but_changes_nothing(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.DRY_RUN)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec.status is ActionStatus.DRY_RUN
    assert rec.result == {"would_switch": {"from": "v2", "to": "v1"}}
    assert current(server) == "v2"
    assert rem.consider(inc, BAD_VERSION, ["accuracy"], time.time()) is None, "planned once per incident"
    assert "action_dry_run" in [t.kind for t in store.timeline(inc.id)]
    rem.close()


def test_approval_flow_then_verified_and_audited(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec.status is ActionStatus.AWAITING_APPROVAL and current(server) == "v2"
    rem.approve(rec.id, actor="alice")
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING, ActionStatus.FAILED})
    assert rec.status is ActionStatus.VERIFYING and current(server) == "v1"
    entries = rem.verify(inc, {"accuracy": Verdict(True)}, None, time.time(), "v1", grace=0.0)
    assert [e.kind for e in entries] == ["mitigated"]
    rec = rem.records()[0]
    assert rec.status is ActionStatus.VERIFIED
    assert [a["event"] for a in rec.audit] == ["planned", "approved", "executed", "verified"]
    assert rec.audit[1]["actor"] == "alice"
    rem.close()


def test_denied_action_never_runs(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rem.deny(rec.id, actor="bob")
    rem.close()                       # waits for every action the remediator started: a denied one is none
    assert rem.records()[0].status is ActionStatus.DENIED and current(server) == "v2"
    with pytest.raises(Conflict, match="not awaiting approval"):
        rem.approve(rec.id, actor="bob")


def test_no_recovery_within_the_window_escalates_and_stops_acting(tmp_path, server):
    store, rem, inc = setup(tmp_path, server)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    assert rec.verify_deadline is not None
    past_window = rec.verify_deadline + 0.2       # the verification clock is passed in: no waiting for it
    entries = rem.verify(inc, {"accuracy": Verdict(False)}, None, past_window, "v1", grace=0.0)
    assert [e.kind for e in entries] == ["escalated"] and inc.escalated
    assert rem.records()[0].status is ActionStatus.NOT_RECOVERED
    other = Hypothesis(FaultDomain.HARDWARE, "hardware.cpu_contention", 0.9, "restart", "x")
    assert rem.consider(inc, other, ["latency"], time.time()) is None
    assert "escalated" in store.timeline(inc.id)[-1].message or "action_blocked" in \
        [t.kind for t in store.timeline(inc.id)]
    rem.close()


def test_service_restart_mid_action_reconciles_instead_of_rerunning(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    doc = store.action(rec.id)
    doc["status"] = ActionStatus.EXECUTING.value       # as if the service died while executing
    store.save_action(doc)
    rem.close()
    fresh = Remediator(store, Policy(verify_seconds=1.0), ActionContext(ModelServerAdmin(server.url)))
    assert fresh.reconcile() == [rec.id]
    rec = fresh.records()[0]
    assert rec.status is ActionStatus.VERIFYING and rec.audit[-1]["event"] == "reconciled"
    assert current(server) == "v2", "a reconciled action is verified, not blindly re-run"
    fresh.close()
    assert ActionKind.ROLLBACK is rec.kind


def test_new_symptom_after_the_action_reverts_it_and_escalates(tmp_path, server):
    store, rem, inc = setup(tmp_path, server)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    assert current(server) == "v1"
    # The rollback's own symptom lingering from before the action is not "worse" ...
    entries = rem.verify(inc, {"accuracy": Verdict(None)}, None, time.time(), "v1", grace=0.0,
                         active={"accuracy": rec.executed_at - 30, "input_drift": rec.executed_at + 2})
    assert entries == [] and rem.records()[0].status is ActionStatus.VERIFYING
    # ... nor a new one that is healthy again on data after the action settled (late labels) ...
    specs = {"accuracy": Verdict(None), "nonfinite_outputs": Verdict(True)}
    later = rec.executed_at + 0.5      # past a quarter of the 1 s verification window, before its end
    active = {"accuracy": rec.executed_at - 30, "nonfinite_outputs": rec.executed_at + 0.1}
    assert rem.verify(inc, specs, None, later, "v1", grace=0.0, active=active) == []
    # ... a new harm signal that started after it and stays unhealthy is.
    specs["nonfinite_outputs"] = Verdict(False)
    entries = rem.verify(inc, specs, None, later, "v1", grace=0.0, active=active)
    assert [e.kind for e in entries] == ["escalated"] and inc.escalated
    assert "nonfinite_outputs started after the rollback" in entries[0].message
    assert current(server) == "v2", "the rollback was undone"
    rec = rem.records()[0]
    assert rec.status is ActionStatus.REVERTED
    assert rec.audit[-1]["event"] == "worse" and rec.audit[-1]["new_symptoms"] == ["nonfinite_outputs"]
    # A reverted action counts as a failed remediation for the escalation guard.
    assert Policy(max_failed=1).decide(ActionKind.ROLLBACK, 0.9, [], rem.records(), False, time.time()).escalate
    rem.close()


def test_revert_can_be_switched_off(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, revert_on_worse=False)
    rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    entries = rem.verify(inc, {"accuracy": Verdict(None), "nonfinite_outputs": Verdict(False)}, None,
                         rec.executed_at + 0.5, "v1", grace=0.0, active={"nonfinite_outputs": rec.executed_at + 0.1})
    assert entries == [] and current(server) == "v1"
    rem.close()


def test_a_restart_that_makes_things_worse_escalates_and_says_it_cannot_be_undone(tmp_path, registry_dir):
    from diagnosis.types import FaultDomain as D
    from tests.model_server.conftest import supervised_server

    proc, url = supervised_server(registry_dir, tmp_path / "ms.log")
    proc.start()
    try:
        store = Store(tmp_path / "db.sqlite")
        rem = Remediator(store, Policy(verify_seconds=1.0), ActionContext(ModelServerAdmin(url), proc))
        hang = Hypothesis(D.HARDWARE, "hardware.process_hang", 0.9, "restart", "hung", evidence_ids=("ev",))
        inc, entries = open_incident("digits", [hang], ["ev"], time.time(), [])
        store.save_incident(inc, entries)
        rec = rem.consider(inc, hang, ["request_stall"], time.time())
        rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
        entries = rem.verify(inc, {"request_stall": Verdict(None), "error_rate": Verdict(False)}, None,
                             rec.executed_at + 0.5, None, grace=0.0, active={"error_rate": rec.executed_at + 0.1})
        assert [e.kind for e in entries] == ["escalated"] and "restart cannot be undone" in entries[0].message
        assert rem.records()[0].status is ActionStatus.NOT_RECOVERED
        rem.close()
    finally:
        proc.stop()
