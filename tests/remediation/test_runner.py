"""The action runner under policy on a real model server: dry-run, approval, verification, escalation, audit."""
from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest

from diagnosis.lifecycle import open_incident
from diagnosis.types import FaultDomain, Hypothesis, TimelineKind
from incidentd.store import Store
from remediation.actions import ActionContext
from remediation.executors import ModelServerAdmin
from remediation.policy import Policy
from remediation.runner import ActionRunner
from remediation.types import ActionKind, ActionMode, ActionStatus, NotAwaitingApproval
from tests.model_server.conftest import start_server

BAD_VERSION = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
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
    rem = ActionRunner(store, Policy(verify_seconds=1.0, **policy), ActionContext(ModelServerAdmin(server.url)))
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
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec.status is ActionStatus.DRY_RUN
    assert rec.result is not None and rec.result.to_dict() == {"would_switch": {"from": "v2", "to": "v1"}}
    assert current(server) == "v2"
    assert inc.action_ids == (rec.id,) and store.incident(inc.id).action_ids == (rec.id,)
    assert rem.consider(inc, BAD_VERSION, ["accuracy"], time.time()) == (inc, None), "planned once per incident"
    assert TimelineKind.ACTION_DRY_RUN in [t.kind for t in store.timeline(inc.id)]
    rem.close()


def test_approval_flow_then_verified_and_audited(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec.status is ActionStatus.AWAITING_APPROVAL and current(server) == "v2"
    rem.approve(rec.id, actor="alice")
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING, ActionStatus.FAILED})
    assert rec.status is ActionStatus.VERIFYING and current(server) == "v1"
    inc, entries = rem.verify(inc, {"accuracy": Verdict(True)}, None, time.time(), "v1", grace=0.0)
    assert [e.kind for e in entries] == [TimelineKind.MITIGATED]
    assert inc.status.value == "mitigated" and inc.mitigated_at is not None
    rec = rem.records()[0]
    assert rec.status is ActionStatus.VERIFIED
    assert [a.event for a in rec.audit] == ["planned", "approved", "executed", "verified"]
    assert rec.audit[1].actor == "alice"
    rem.close()


def test_denied_action_never_runs(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rem.deny(rec.id, actor="bob")
    with pytest.raises(NotAwaitingApproval, match="not awaiting approval"):
        rem.approve(rec.id, actor="bob")
    rem.close()   # waits for anything the runner started
    assert rem.records()[0].status is ActionStatus.DENIED and current(server) == "v2"


def test_no_recovery_within_the_window_escalates_and_stops_acting(tmp_path, server):
    store, rem, inc = setup(tmp_path, server)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    past_deadline = rec.verify_deadline + 0.1
    inc, entries = rem.verify(inc, {"accuracy": Verdict(False)}, None, past_deadline, "v1", grace=0.0)
    assert [e.kind for e in entries] == [TimelineKind.ESCALATED] and inc.escalated
    assert rem.records()[0].status is ActionStatus.NOT_RECOVERED
    other = Hypothesis(FaultDomain.HARDWARE, "hardware.cpu_contention", 0.9, ActionKind.RESTART, "x")
    assert rem.consider(inc, other, ["latency"], past_deadline) == (inc, None)
    assert TimelineKind.ACTION_BLOCKED in [t.kind for t in store.timeline(inc.id)]
    rem.close()


def test_service_restart_mid_action_reconciles_instead_of_rerunning(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    # as if the service died after the approval, before the server loaded v1
    store.save_action(replace(store.action(rec.id), status=ActionStatus.EXECUTING))
    rem.close()
    fresh = ActionRunner(store, Policy(verify_seconds=1.0), ActionContext(ModelServerAdmin(server.url)))
    assert fresh.reconcile() == [rec.id]
    rec = fresh.records()[0]
    assert current(server) == "v2", "a reconciled action is read back, not blindly re-run"
    assert rec.status is ActionStatus.FAILED and rec.result is not None and rec.result.retryable
    assert rec.audit[-1].event == "reconciled" and rec.audit[-1].data["readback"]["shown"]["serving"] == "v2"
    fresh.close()
    assert ActionKind.ROLLBACK is rec.kind


def test_new_symptom_after_the_action_reverts_it_and_escalates(tmp_path, server):
    store, rem, inc = setup(tmp_path, server)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    assert current(server) == "v1"
    # The rollback's own symptom lingering from before the action is not "worse" ...
    inc, entries = rem.verify(inc, {"accuracy": Verdict(None)}, None, time.time(), "v1", grace=0.0,
                         active={"accuracy": rec.executed_at - 30, "input_drift": rec.executed_at + 2})
    assert entries == [] and rem.records()[0].status is ActionStatus.VERIFYING
    # ... nor a new one that is healthy again on data after the action settled (late labels) ...
    specs = {"accuracy": Verdict(None), "nonfinite_outputs": Verdict(True)}
    later = rec.executed_at + 0.5      # past a quarter of the 1 s verification window, before its end
    active = {"accuracy": rec.executed_at - 30, "nonfinite_outputs": rec.executed_at + 0.1}
    assert rem.verify(inc, specs, None, later, "v1", grace=0.0, active=active) == (inc, [])
    # ... a new harm signal that started after it and stays unhealthy is.
    specs["nonfinite_outputs"] = Verdict(False)
    inc, entries = rem.verify(inc, specs, None, later, "v1", grace=0.0, active=active)
    assert [e.kind for e in entries] == [TimelineKind.ESCALATED] and inc.escalated
    assert "nonfinite_outputs started after the rollback" in entries[0].message
    assert current(server) == "v2", "the rollback was undone"
    rec = rem.records()[0]
    assert rec.status is ActionStatus.REVERTED
    assert rec.audit[-1].event == "worse" and rec.audit[-1].data["new_symptoms"] == ["nonfinite_outputs"]
    # A reverted action counts as a failed remediation for the escalation guard.
    assert Policy(max_failed=1).decide(ActionKind.ROLLBACK, 0.9, [], rem.records(), False, time.time()).escalate
    rem.close()


def test_revert_can_be_switched_off(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, revert_on_worse=False)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    inc, entries = rem.verify(inc, {"accuracy": Verdict(None), "nonfinite_outputs": Verdict(False)}, None,
                              rec.executed_at + 0.5, "v1", grace=0.0,
                              active={"nonfinite_outputs": rec.executed_at + 0.1})
    assert entries == [] and current(server) == "v1" and not inc.escalated
    rem.close()


def test_a_restart_that_makes_things_worse_escalates_and_says_it_cannot_be_undone(tmp_path, registry_dir):
    from diagnosis.types import FaultDomain as D
    from tests.model_server.conftest import supervised_server

    proc, url = supervised_server(registry_dir, tmp_path / "ms.log")
    proc.start()
    try:
        store = Store(tmp_path / "db.sqlite")
        rem = ActionRunner(store, Policy(verify_seconds=1.0), ActionContext(ModelServerAdmin(url), proc))
        hang = Hypothesis(D.HARDWARE, "hardware.process_hang", 0.9, ActionKind.RESTART, "hung", evidence_ids=("ev",))
        inc, entries = open_incident("digits", [hang], ["ev"], time.time(), [])
        store.save_incident(inc, entries)
        inc, rec = rem.consider(inc, hang, ["request_stall"], time.time())
        rec = wait_status(rem, rec.id, {ActionStatus.VERIFYING})
        inc, entries = rem.verify(inc, {"request_stall": Verdict(None), "error_rate": Verdict(False)}, None,
                                  rec.executed_at + 0.5, None, grace=0.0, active={"error_rate": rec.executed_at + 0.1})
        assert [e.kind for e in entries] == [TimelineKind.ESCALATED]
        assert "restart cannot be undone" in entries[0].message
        assert rem.records()[0].status is ActionStatus.NOT_RECOVERED
        rem.close()
    finally:
        proc.stop()


def test_a_blocked_action_is_noted_once_per_reason_until_the_model_is_forgotten(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    rem = ActionRunner(store, Policy(min_confidence=0.95), ActionContext(ModelServerAdmin("http://127.0.0.1:9")))
    inc, entries = open_incident("digits", [BAD_VERSION], ["ev-acc"], 100.0, [])
    store.save_incident(inc, entries)

    def blocked() -> int:
        return [t.kind for t in store.timeline(inc.id)].count(TimelineKind.ACTION_BLOCKED)

    rem.consider(inc, BAD_VERSION, ["accuracy"], 101.0)
    rem.consider(inc, BAD_VERSION, ["accuracy"], 102.0)
    assert blocked() == 1, "the same reason is noted once"
    rem.forget("other-model")
    rem.consider(inc, BAD_VERSION, ["accuracy"], 103.0)
    assert blocked() == 1
    rem.forget("digits")
    rem.consider(inc, BAD_VERSION, ["accuracy"], 104.0)
    assert blocked() == 2, "a forgotten model starts afresh"
    rem.close()
    store.close()


def test_a_guard_that_refuses_keeps_the_action_from_running_and_another_runner_runs_it_later(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    asked = []

    def elsewhere(rec):   # as a replica that does not hold the model's lease
        asked.append(rec.id)
        return False

    rem.guard = elsewhere
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rem.approve(rec.id, actor="alice")
    rem.close()   # waits for the attempt
    assert asked == [rec.id]
    assert store.action(rec.id).status is ActionStatus.EXECUTING and current(server) == "v2"

    owner = ActionRunner(store, Policy(verify_seconds=1.0), ActionContext(ModelServerAdmin(server.url)),
                         guard=lambda r: r.model == "digits")
    owner.execute_later(rec.id)   # the replica that owns the model picks the approved action up
    done = wait_status(owner, rec.id, {ActionStatus.VERIFYING, ActionStatus.FAILED})
    assert done.status is ActionStatus.VERIFYING and current(server) == "v1"
    owner.execute_later(rec.id)   # once only: an executed action is not run again
    owner.close()
    assert [a.event for a in store.action(rec.id).audit].count("executed") == 1


def test_reconcile_takes_only_the_named_actions_or_model(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, default_mode=ActionMode.APPROVE)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    store.save_action(replace(store.action(rec.id), status=ActionStatus.EXECUTING))
    rem.close()
    assert rem.reconcile(ids={"act-someone-else"}) == []
    assert rem.reconcile(model="another-model") == []
    assert store.action(rec.id).status is ActionStatus.EXECUTING
    assert rem.reconcile(model="digits", ids={rec.id}) == [rec.id]
    assert store.action(rec.id).status is ActionStatus.FAILED and current(server) == "v2"


def test_a_failure_retrying_cannot_fix_escalates_at_once_saying_why(tmp_path, server, registry_dir):
    store, rem, inc = setup(tmp_path, server)
    weights = registry_dir / "versions" / "v1" / "model.pt"
    weights.write_bytes(b"not a checkpoint")            # the known-good checkpoint is corrupt
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    rec = wait_status(rem, rec.id, {ActionStatus.FAILED, ActionStatus.VERIFYING})
    assert rec.status is ActionStatus.FAILED and rec.result is not None and not rec.result.retryable
    assert current(server) == "v2"
    inc, entries = rem.verify(inc, {"accuracy": Verdict(None)}, None, time.time(), "v2", grace=0.0)
    assert inc.escalated
    (entry,) = entries
    assert "retrying cannot fix it" in entry.message and rec.result.error in entry.message
    # Said once: the next cycle adds nothing, and the runner does not try the same action again.
    inc2, again = rem.verify(inc, {"accuracy": Verdict(None)}, None, time.time(), "v2", grace=0.0)
    assert again == [] and rem.consider(inc2, BAD_VERSION, ["accuracy"], time.time())[1] is None


def test_a_transient_failure_is_retried_under_the_cooldown_not_escalated(tmp_path, registry_dir):
    down = start_server(registry_dir)
    down.stop()                                          # nothing answers: a transient failure
    store, rem, inc = setup(tmp_path, down, cooldown_seconds=0, max_actions_per_incident=3)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec is not None
    rec = wait_status(rem, rec.id, {ActionStatus.FAILED, ActionStatus.VERIFYING})
    assert rec.status is ActionStatus.FAILED and rec.result is not None and rec.result.retryable
    inc, entries = rem.verify(inc, {"accuracy": Verdict(None)}, None, time.time(), "v2", grace=0.0)
    assert not inc.escalated and entries == []
    inc, retry = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert retry is not None and retry.idempotency_key == f"{inc.id}:rollback:2"


def test_a_fault_back_after_a_verified_fix_is_acted_on_again_under_the_policy(tmp_path, server):
    from diagnosis.lifecycle import reopen

    store, rem, inc = setup(tmp_path, server, cooldown_seconds=0)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    wait_status(rem, rec.id, {ActionStatus.VERIFYING})
    inc, _ = rem.verify(inc, {"accuracy": Verdict(True)}, None, time.time() + 1, "v1", grace=0.0)
    assert inc.status.value == "mitigated"
    assert rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())[1] is None, "mitigated: nothing to do"
    inc, _ = reopen(inc, time.time(), "back")
    inc, again = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert again is not None and again.idempotency_key == f"{inc.id}:rollback:2"
