"""Reconciling an action caught mid-execution by a service restart: the server is read back, per action kind.

Done only when the server shows it done (then verified on data newer than the read-back); otherwise failed
and retryable, with what the server showed in the audit. A real model server throughout; the SIGKILL of a
real service is in tests/integration/test_reconcile_sigkill.py.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from diagnosis.lifecycle import open_incident
from diagnosis.types import EvidenceKind, FaultDomain, Hypothesis, TimelineKind
from incidentd.store import Store
from remediation.actions import ACTIONS, ActionContext
from remediation.executors import LocalProcess, ModelServerAdmin
from remediation.policy import Policy
from remediation.runner import ActionRunner
from remediation.types import ActionKind, ActionMode, ActionStatus, Applied
from tests.model_server.conftest import free_port, start_server

HYP = {
    ActionKind.ROLLBACK: Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
                                    evidence_ids=("ev",), rules=("accuracy-drop-after-deploy",)),
    ActionKind.CLAMP: Hypothesis(FaultDomain.MODEL, "model.nonfinite_weights", 0.95, ActionKind.CLAMP, "NaN weights",
                                 evidence_ids=("ev",), rules=("nonfinite-weights",)),
    ActionKind.RESTART: Hypothesis(FaultDomain.HARDWARE, "hardware.process_hang", 0.9, ActionKind.RESTART, "hung",
                                   evidence_ids=("ev",), rules=("hang",)),
}


class Since:
    """A signal whose verdict is recovered; it records the start of the data window it was asked to judge."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def recovered(self, source, model, since, now, version=None):
        self.asked.append(since)
        return True


@pytest.fixture()
def server(registry_dir):
    s = start_server(registry_dir)
    httpx.post(s.url + "/admin/load", json={"version": "v2"}).raise_for_status()
    yield s
    s.stop()


def in_flight(tmp_path: Path, ctx: ActionContext, kind: ActionKind, **policy):
    """An action approved and executing (as a SIGKILL of the service leaves it), and a fresh runner."""
    store = Store(tmp_path / "db.sqlite")
    rem = ActionRunner(store, Policy(verify_seconds=30.0, default_mode=ActionMode.APPROVE, **policy), ctx)
    inc, entries = open_incident("digits", [HYP[kind]], ["ev"], time.time(), [])
    store.save_incident(inc, entries)
    inc, rec = rem.consider(inc, HYP[kind], ["accuracy"], time.time())
    assert rec is not None and rec.status is ActionStatus.AWAITING_APPROVAL, rec
    store.save_action(replace(rec, status=ActionStatus.EXECUTING).logged(time.time(), "approved", actor="alice"))
    rem.close()
    return store, ActionRunner(store, rem.policy, ctx), inc, rec


def versions(server) -> dict:
    return httpx.get(server.url + "/admin/versions").json()


def test_a_rollback_the_server_shows_done_is_verified_only_on_data_after_the_read_back(tmp_path, server):
    store, rem, inc, rec = in_flight(tmp_path, ActionContext(ModelServerAdmin(server.url)), ActionKind.ROLLBACK)
    httpx.post(server.url + "/admin/load", json={"version": "v1"}).raise_for_status()  # the request got through
    before = time.time()
    assert rem.reconcile() == [rec.id]
    got = store.action(rec.id)
    assert got.status is ActionStatus.VERIFYING and got.executed_at is not None and got.executed_at >= before
    assert got.audit[-1].event == "reconciled" and got.audit[-1].data["outcome"] == "done"
    assert got.audit[-1].data["readback"]["shown"] == {"serving": "v1", "running": "v1", "target": "v1"}
    assert got.result is not None and got.result.data["from"] == "v2", "a revert knows where to go back to"
    entry = [t for t in store.timeline(inc.id) if t.kind is TimelineKind.ACTION_RECONCILED][-1]
    assert "the server serves v1" in entry.message
    assert any(e.kind is EvidenceKind.CHANGE and e.attributes.get("action_id") == rec.id
               for e in store.recent_evidence("digits", before)), "the rollback is a change the diagnosis sees"
    signal = Since()
    inc, _ = rem.verify(store.incident(inc.id), {"accuracy": signal}, None, time.time(), "v1", grace=0.0)
    assert signal.asked and min(signal.asked) >= before, "only data after the read-back is judged"
    assert store.action(rec.id).status is ActionStatus.VERIFIED
    rem.close()


def test_a_rollback_the_server_does_not_show_fails_retryable_and_runs_again(tmp_path, server):
    ctx = ActionContext(ModelServerAdmin(server.url))
    # The default cooldown: nothing ran on the server, so none starts, and the retry runs at once.
    store, rem, inc, rec = in_flight(tmp_path, ctx, ActionKind.ROLLBACK, cooldown_seconds=300.0)
    assert rem.reconcile() == [rec.id]
    got = store.action(rec.id)
    assert versions(server)["current"] == "v2", "read back, not re-run"
    assert got.status is ActionStatus.FAILED and got.result is not None and got.result.retryable
    assert "killed before the server showed the rollback done" in (got.result.error or "")
    assert got.audit[-1].data["readback"]["applied"] == Applied.NOT_DONE.value
    assert got.audit[-1].data["readback"]["shown"]["serving"] == "v2"
    # Actions are idempotent: the policy may plan and run it again, and this time it lands.
    rem.policy = replace(rem.policy, default_mode=ActionMode.AUTO)
    _, again = rem.consider(store.incident(inc.id), HYP[ActionKind.ROLLBACK], ["accuracy"], time.time())
    assert again is not None and again.id != rec.id
    rem.close()
    assert store.action(again.id).status is ActionStatus.VERIFYING and versions(server)["current"] == "v1"


@pytest.mark.parametrize("applied", [True, False], ids=["clamped", "not-clamped"])
def test_a_clamp_is_done_only_when_a_dry_run_finds_nothing_left(tmp_path, server, applied):
    httpx.post(server.url + "/admin/faults", json={"fault": "nonfinite_weights", "params": {"count": 8}}
               ).raise_for_status()
    ctx = ActionContext(ModelServerAdmin(server.url))
    store, rem, inc, rec = in_flight(tmp_path, ctx, ActionKind.CLAMP)
    if applied:
        assert rec.plan is not None
        ACTIONS[ActionKind.CLAMP].execute(ctx, rec.plan)
    rem.reconcile()
    got = store.action(rec.id)
    shown = got.audit[-1].data["readback"]["shown"]
    if applied:
        assert got.status is ActionStatus.VERIFYING and shown["nonfinite"] == 0 and shown["out_of_bounds"] == 0
    else:
        assert got.status is ActionStatus.FAILED and got.result is not None and got.result.retryable
        assert shown["nonfinite"] == 8
    weights = httpx.get(server.url + "/admin/weights").json()["tensors"]
    assert sum(t["nonfinite"] for t in weights) == (0 if applied else 8), "the record matches the server"
    rem.close()


def supervised(registry: Path, tmp_path: Path) -> tuple[LocalProcess, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "incidentd.model_server", "--registry", str(registry), "--port", str(port),
           "--log-level", "warning", "--device", "cpu"]
    return LocalProcess(cmd, url + "/healthz", tmp_path / "ms.log", pid_file=tmp_path / "ms.pid"), url


@pytest.mark.parametrize("restarted", [True, False], ids=["restarted", "not-restarted"])
def test_a_restart_is_done_only_when_another_instance_serves(tmp_path, registry_dir, restarted):
    proc, url = supervised(registry_dir, tmp_path)
    proc.start()
    try:
        ctx = ActionContext(ModelServerAdmin(url), proc)
        store, rem, inc, rec = in_flight(tmp_path, ctx, ActionKind.RESTART)
        planned = proc.pid
        if restarted:
            proc.restart()
        rem.reconcile()
        got = store.action(rec.id)
        assert got.audit[-1].data["readback"]["shown"] == {"planned": planned, "instance": proc.pid}
        assert got.status is (ActionStatus.VERIFYING if restarted else ActionStatus.FAILED)
        assert httpx.get(url + "/healthz").json()["pid"] == proc.pid
        rem.close()
    finally:
        proc.stop()


def test_a_restart_through_an_executor_that_names_no_instance_is_unknown_and_never_done(tmp_path, registry_dir):
    # A supervised server not running names no instance (pid None), as an MLServer or Triton repository API
    # executor never does: the read-back cannot tell a restart from no restart.
    proc, url = supervised(registry_dir, tmp_path)
    ctx = ActionContext(ModelServerAdmin(url), proc)
    store, rem, inc, rec = in_flight(tmp_path, ctx, ActionKind.RESTART)
    assert rec.plan is not None and rec.plan.params["pid"] is None
    rem.reconcile()
    got = store.action(rec.id)
    assert got.status is ActionStatus.FAILED and got.result is not None and got.result.retryable
    assert got.audit[-1].data["readback"]["applied"] == Applied.UNKNOWN.value
    assert "could not tell" in (got.result.error or "")
    rem.close()


def test_an_unreachable_server_is_unknown_never_done(tmp_path, server):
    ctx = ActionContext(ModelServerAdmin(server.url))
    store, rem, inc, rec = in_flight(tmp_path, ctx, ActionKind.ROLLBACK)
    server.stop()
    rem.reconcile()
    got = store.action(rec.id)
    assert got.status is ActionStatus.FAILED and got.result is not None and got.result.retryable
    assert got.audit[-1].data["readback"]["applied"] == Applied.UNKNOWN.value
    assert "could not read the serving version" in got.audit[-1].data["readback"]["summary"]
    rem.close()


def test_a_server_answering_nonsense_is_unknown_and_reconciling_goes_on(tmp_path, server):
    # A plain web server where the admin API should be: a 200 that is not JSON. Reconciling runs at the
    # service's start, so an odd answer must be recorded as "cannot tell", never raised.
    import functools
    import http.server
    import threading

    site = tmp_path / "site"
    (site / "admin").mkdir(parents=True)
    (site / "admin" / "versions").write_text("<html>not the admin API</html>")
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        store, rem, inc, rec = in_flight(tmp_path, ActionContext(ModelServerAdmin(server.url)), ActionKind.ROLLBACK)
        rem.ctx = ActionContext(ModelServerAdmin(f"http://127.0.0.1:{web.server_address[1]}"))
        assert rem.reconcile() == [rec.id]
        got = store.action(rec.id)
        assert got.status is ActionStatus.FAILED and got.result is not None and got.result.retryable
        assert got.audit[-1].data["readback"]["applied"] == Applied.UNKNOWN.value
        rem.close()
    finally:
        web.shutdown()
