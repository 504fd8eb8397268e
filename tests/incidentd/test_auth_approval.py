"""Approval that stays safe, on a real model server whose admin API needs a token (which the executors send):
plans expire, approving re-runs the policy, an optional second person, and unauthenticated change events
never start an action on their own."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from diagnosis.lifecycle import open_incident
from diagnosis.types import (
    ActionKind,
    ChangeKind,
    Evidence,
    EvidenceKind,
    FaultDomain,
    Hypothesis,
    TimelineKind,
)
from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from incidentd.store import Store
from remediation.actions import ActionContext
from remediation.approval import ApprovalRules
from remediation.executors import ModelServerAdmin
from remediation.policy import Policy
from remediation.runner import ActionRunner
from remediation.types import ActionFailed, ActionMode, ActionStatus, ApprovalRefused, NotAwaitingApproval
from tests.incidentd.keyring import bearer
from tests.model_server.conftest import REPO, free_port

TOKEN = "admin-token-for-tests"
BAD_VERSION = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
                         evidence_ids=("ev-acc",), rules=("accuracy-drop-after-deploy",))


@pytest.fixture(scope="module")
def live(template_registry: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo model server on loopback with an admin token (one per module: starting one takes a while)."""
    tmp_path = tmp_path_factory.mktemp("approval")
    registry_dir = tmp_path / "registry"
    shutil.copytree(template_registry, registry_dir, symlinks=True)
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "incidentd.model_server", "--registry", str(registry_dir),
                             "--port", str(port), "--log-level", "warning", "--device", "cpu",
                             "--admin-token-file", str(token_file)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "model server exited"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def server(live: str) -> str:
    """The live server, serving the bad version v2 at the start of each test."""
    ModelServerAdmin(live, token=TOKEN).load("v2")
    return live


def setup(tmp_path, url, rules=ApprovalRules(), **policy):
    store = Store(tmp_path / "db.sqlite")
    rem = ActionRunner(store, Policy(verify_seconds=1.0, default_mode=ActionMode.APPROVE, **policy),
                       ActionContext(ModelServerAdmin(url, token=TOKEN)), approval_rules=rules)
    inc, entries = open_incident("digits", [BAD_VERSION], ["ev-acc"], time.time(), [])
    store.save_incident(inc, entries)
    return store, rem, inc


def running(url: str) -> str:
    return ModelServerAdmin(url, token=TOKEN).versions()["current"]


def wait_status(rem, statuses, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = rem.records()[0]
        if rec.status in statuses:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"action stayed {rem.records()[0].status}")


def test_admin_api_needs_the_token(server):
    for method, path, body in [("GET", "/admin/versions", None), ("POST", "/admin/load", {"version": "v1"}),
                               ("POST", "/admin/known-good", {"version": "v2"}),
                               ("POST", "/admin/clamp", {"dry_run": False, "percentile": 50.1, "margin": 0}),
                               ("POST", "/admin/faults", {"fault": "latency", "params": {}}),
                               ("DELETE", "/admin/faults", None)]:
        r = httpx.request(method, server + path, json=body)
        assert r.status_code == 401, (method, path, r.status_code)
        wrong = httpx.request(method, server + path, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    assert httpx.get(server + "/healthz").status_code == 200
    assert running(server) == "v2"   # nothing above changed the server
    with pytest.raises(ActionFailed, match="401"):
        ModelServerAdmin(server).versions()


def test_an_unanswered_plan_expires_and_blocks_nothing(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, rules=ApprovalRules(timeout_seconds=60))
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec is not None
    assert rec.status is ActionStatus.AWAITING_APPROVAL and rem.in_flight("digits")
    assert rem.expire_pending(rec.created_at + 59) == []
    assert rem.expire_pending(rec.created_at + 61) == [rec.id]
    assert rem.records()[0].status is ActionStatus.EXPIRED and not rem.in_flight("digits")
    assert store.timeline(inc.id)[-1].kind is TimelineKind.ACTION_EXPIRED
    with pytest.raises(NotAwaitingApproval, match="not awaiting approval"):
        rem.approve(rec.id, "key:alice")
    # A new plan may be proposed for the same incident: the expired one blocks nothing.
    _, again = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert again is not None and again.status is ActionStatus.AWAITING_APPROVAL
    assert running(server) == "v2"
    rem.close()


def test_approving_an_expired_plan_is_refused_and_says_so(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, rules=ApprovalRules(timeout_seconds=60))
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec is not None
    # as if it had waited past the timeout
    store.save_action(replace(store.action(rec.id), created_at=time.time() - 61))
    with pytest.raises(ApprovalRefused, match="expired"):
        rem.approve(rec.id, "key:alice")
    assert rem.records()[0].status is ActionStatus.EXPIRED and running(server) == "v2"
    rem.close()


@pytest.mark.parametrize("change,reason", [
    ("confidence", "confidence 0.30 below 0.60"),
    ("diagnosis", "the diagnosis changed"),
    ("cooldown", "rollback cooldown"),
    ("rate", "rate limit"),
    ("flapping", "flapping"),
    ("cap", "cap per incident"),
])
def test_approve_reruns_the_policy_on_the_current_diagnosis(tmp_path, server, change, reason):
    store, rem, inc = setup(tmp_path, server, max_actions_per_incident=5, max_actions_per_window=2,
                            flap_limit=1, max_failed=5)
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec is not None
    now = time.time()
    if change == "confidence":
        store.save_incident(replace(inc, hypotheses=(
            Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.3, ActionKind.ROLLBACK, "weaker now"),)))
    elif change == "diagnosis":
        store.save_incident(replace(inc, hypotheses=(
            Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.9, ActionKind.NOTIFY, "drift"), BAD_VERSION)))
    elif change == "cap":
        # Meanwhile the incident's blast radius was used up: five actions ran on this very incident.
        for i in range(5):
            store.save_action(replace(store.action(rec.id), id=f"act-same-{i}", idempotency_key=f"{inc.id}:{i}",
                                      kind=ActionKind.RESTART, status=ActionStatus.VERIFIED,
                                      executed_at=now - 3600, root_cause="hardware.cpu_contention"))
    else:
        # Meanwhile other actions ran on this model (on other incidents).
        kinds = {"cooldown": ["rollback"], "rate": ["restart", "clamp"], "flapping": ["rollback"]}[change]
        # Flapping is the same fix for the same cause; a cooldown holds for any cause.
        cause = "model.bad_version" if change == "flapping" else "model.nonfinite_weights"
        for i, kind in enumerate(kinds):
            store.save_action(replace(store.action(rec.id), id=f"act-other-{i}", incident_id="inc-other",
                                      idempotency_key=f"inc-other:{kind}", kind=ActionKind(kind),
                                      status=ActionStatus.VERIFIED, executed_at=now - 10, root_cause=cause))
    with pytest.raises(ApprovalRefused, match=reason):
        rem.approve(rec.id, "key:alice")
    refused = rem.records(incident_id=inc.id)[0]
    assert refused.status is ActionStatus.AWAITING_APPROVAL and refused.audit[-1].event == "approval_refused"
    assert store.timeline(inc.id)[-1].kind is TimelineKind.ACTION_APPROVAL_REFUSED
    assert running(server) == "v2"
    rem.close()


def test_two_person_approval(tmp_path, server):
    store, rem, inc = setup(tmp_path, server, rules=ApprovalRules(two_person=True))
    inc, rec = rem.consider(inc, BAD_VERSION, ["accuracy"], time.time())
    assert rec is not None
    with pytest.raises(ApprovalRefused, match="requested this plan"):
        rem.approve(rec.id, "incidentd")
    first = rem.approve(rec.id, "key:alice")
    assert first.status is ActionStatus.AWAITING_APPROVAL and "1 of 2" in store.timeline(inc.id)[-1].message
    with pytest.raises(ApprovalRefused, match="already approved"):
        rem.approve(rec.id, "key:alice")
    assert running(server) == "v2"
    rem.approve(rec.id, "jwt:bob@example.test")
    done = wait_status(rem, {ActionStatus.VERIFYING, ActionStatus.FAILED})
    assert done.status is ActionStatus.VERIFYING and running(server) == "v1"   # the executor sent the token
    assert [a.actor for a in done.audit if a.event in ("approval_recorded", "approved")] == \
        ["key:alice", "jwt:bob@example.test"]
    rem.close()


def test_unauthenticated_change_event_never_triggers_an_automatic_action(tmp_path, server):
    store = Store(tmp_path / "db.sqlite")
    rem = ActionRunner(store, Policy(verify_seconds=1.0), ActionContext(ModelServerAdmin(server, token=TOKEN)))
    deploy = Evidence("chg-anon", EvidenceKind.CHANGE, "digits", ChangeKind.DEPLOY.value, time.time() - 30,
                      "deploy of digits", attributes={"by": "anonymous", "authenticated": False})
    store.save_evidence(deploy)
    hyp = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
                     evidence_ids=("ev-acc", "chg-anon"))
    inc, entries = open_incident("digits", [hyp], ["ev-acc", "chg-anon"], time.time(), [])
    store.save_incident(inc, entries)
    _, rec = rem.consider(inc, hyp, ["accuracy"], time.time())
    assert rec is not None
    assert rec.status is ActionStatus.AWAITING_APPROVAL and rec.mode is ActionMode.APPROVE
    rem.close()   # waits for anything the runner submitted: nothing may have run
    assert running(server) == "v2", "an anonymous deploy event must not roll anything back by itself"


def test_api_approval_is_by_the_authenticated_identity_and_409_when_refused(tmp_path, server):
    rt = Runtime(Settings(database=tmp_path / "svc.db", model_server_url=server, model_server_admin_token=TOKEN,
                          remediation={"default_mode": "approve", "min_confidence": 0.6}))
    try:
        inc, entries = open_incident("digits", [BAD_VERSION], ["ev-acc"], time.time(), [])
        rt.store.save_incident(inc, entries)
        inc, rec = rt.remediator.consider(inc, BAD_VERSION, ["accuracy"], time.time())
        assert rec is not None
        with TestClient(create_app(rt.settings, rt, start=False)) as c:
            lead = bearer(rt.store, "lead")
            url = f"/incidents/{inc.id}/actions/{rec.id}/approve"
            rt.store.save_incident(replace(inc, hypotheses=(
                Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.2, ActionKind.ROLLBACK, "weaker"),)))
            r = c.post(url, headers=lead, json={"note": "go"})
            assert r.status_code == 409 and "confidence 0.20 below 0.60" in r.json()["error"]
            rt.store.save_incident(inc)
            r = c.post(url, headers=lead)
            assert r.status_code == 200 and r.json()["audit"][-1] == {**r.json()["audit"][-1], "actor": "key:lead"}
        done = wait_status(rt.remediator, {ActionStatus.VERIFYING, ActionStatus.FAILED})
        assert done.status is ActionStatus.VERIFYING and running(server) == "v1"
    finally:
        rt.stop()
