"""`incidentd serve` killed with SIGKILL in the middle of each action kind, then started again on the same database.

The service supervises the real demo model server (``supervise_command``) and reaches its admin API through a
relay that holds the action's request, so the kill lands inside the action. The test then lets the held
request through (the server applies it) or drops it (the server never sees it), starts the service again,
and checks the recorded action against what the server shows:

- the server shows it done -> ``verifying``, executed_at after the restart (judged only on fresh data);
- it does not -> ``failed``, retryable, with what the server showed in the audit;
- the model server that outlived the service is adopted: never a second one on the same port.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from diagnosis.lifecycle import open_incident
from diagnosis.types import FaultDomain, Hypothesis
from incidentd.auth.keys import create_key
from incidentd.auth.scopes import Scope
from incidentd.store import Store
from remediation.actions import ActionContext
from remediation.executors import LocalProcess, ModelServerAdmin
from remediation.policy import Policy
from remediation.runner import ActionRunner
from remediation.types import ActionKind, ActionMode, ActionStatus
from tests.model_server.conftest import registry_dir, template_registry  # noqa: F401

from .conftest import free_port
from .holding_relay import HoldingRelay
from .test_fault_injection import Service

HYP = {
    ActionKind.ROLLBACK: Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
                                    evidence_ids=("ev",), rules=("accuracy-drop-after-deploy",)),
    ActionKind.CLAMP: Hypothesis(FaultDomain.MODEL, "model.nonfinite_weights", 0.95, ActionKind.CLAMP, "NaN weights",
                                 evidence_ids=("ev",), rules=("nonfinite-weights",)),
    ActionKind.RESTART: Hypothesis(FaultDomain.HARDWARE, "hardware.process_hang", 0.9, ActionKind.RESTART, "hung",
                                   evidence_ids=("ev",), rules=("hang",)),
}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def running(command: list[str]) -> list[int]:
    """Pids of the live processes running exactly ``command``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = entry.joinpath("cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if [a.decode() for a in argv] == command and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


class Stack:
    """The model server (started by the service), the relay in front of its API, and the service's runs."""

    def __init__(self, tmp: Path, registry: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "incidentd.db"
        port = free_port()
        self.ms_url = f"http://127.0.0.1:{port}"
        self.command = [sys.executable, "-m", "incidentd.model_server", "--registry", str(registry), "--port",
                        str(port), "--log-level", "warning", "--device", "cpu", "--enable-fault-injection"]
        self.relay = HoldingRelay(port)
        self.pid_file = tmp / "model-server.pid"
        store = Store(self.db)
        try:
            key = create_key(store, "alice", frozenset({Scope.APPROVE, Scope.READ})).key
        finally:
            store.close()
        self.auth = {"Authorization": f"Bearer {key}"}
        self.runs: list[Service] = []
        self.children: set[int] = set()

    def serve(self) -> Service:
        """One run of `incidentd serve` on the shared database, config and model-server log."""
        run = self.tmp / f"run{len(self.runs) + 1}"
        run.mkdir()
        svc = Service(run, database=str(self.db), model_server_url=self.relay.url,
                      supervise_command=self.command, supervise_log=str(self.tmp / "model-server.log"),
                      remediation={"default_mode": "approve", "verify_seconds": 600.0})
        self.runs.append(svc)
        self.children.update(running(self.command))
        return svc

    def child(self) -> int:
        return int(json.loads(self.pid_file.read_text())["pid"])

    def serving_pid(self) -> int:
        return int(httpx.get(self.ms_url + "/healthz", timeout=10).json()["pid"])

    def seed(self, kind: ActionKind, process: LocalProcess | None = None) -> tuple[str, str]:
        """An open incident whose plan for ``kind`` (made on the live server) awaits approval."""
        store = Store(self.db)
        try:
            rem = ActionRunner(store, Policy(default_mode=ActionMode.APPROVE),
                               ActionContext(ModelServerAdmin(self.relay.url), process))
            inc, entries = open_incident("digits", [HYP[kind]], ["ev"], time.time(), [])
            store.save_incident(inc, entries)
            _, rec = rem.consider(inc, HYP[kind], ["accuracy"], time.time())
            rem.close()
        finally:
            store.close()
        assert rec is not None and rec.status is ActionStatus.AWAITING_APPROVAL, rec
        return inc.id, rec.id

    def approve(self, svc: Service, incident_id: str, action_id: str) -> None:
        r = httpx.post(f"{svc.url}/incidents/{incident_id}/actions/{action_id}/approve", headers=self.auth,
                       timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "executing", r.text

    def kill(self, svc: Service) -> None:
        svc.proc.send_signal(signal.SIGKILL)
        assert svc.proc.wait(30) == -signal.SIGKILL

    def action(self, svc: Service, incident_id: str, action_id: str) -> dict[str, Any]:
        detail = httpx.get(f"{svc.url}/incidents/{incident_id}", headers=self.auth, timeout=10).json()
        return next(a for a in detail["actions"] if a["id"] == action_id)

    def recorded(self, action_id: str) -> str:
        store = Store(self.db)
        try:
            return store.action(action_id).status.value
        finally:
            store.close()

    def close(self) -> None:
        for svc in self.runs:
            svc.stop()
        self.relay.close()
        for pid in self.children | set(running(self.command)):
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture()
def stack(tmp_path, registry_dir) -> Iterator[Stack]:  # noqa: F811
    s = Stack(tmp_path, registry_dir)
    yield s
    s.close()


def restarted_and_adopted(stack: Stack, child: int) -> Service:
    """Start the service again; it adopts ``child``, the model server that outlived the killed run."""
    svc = stack.serve()
    assert running(stack.command) == [child] and stack.serving_pid() == child, "no second model server"
    return svc


def readback(action: dict[str, Any]) -> dict[str, Any]:
    (event,) = [a for a in action["audit"] if a["event"] == "reconciled"]
    return dict(event["readback"])


@pytest.mark.parametrize("through", [True, False], ids=["load-applied", "load-dropped"])
def test_sigkill_mid_rollback(stack, through):
    first = stack.serve()
    child = stack.child()
    httpx.post(stack.ms_url + "/admin/load", json={"version": "v2"}, timeout=60).raise_for_status()
    incident_id, action_id = stack.seed(ActionKind.ROLLBACK)
    stack.relay.arm(lambda head, body: head.startswith(b"POST /admin/load "))
    stack.approve(first, incident_id, action_id)
    assert stack.relay.wait_held(60) == [b"POST /admin/load HTTP/1.1"]
    stack.kill(first)
    assert stack.recorded(action_id) == "executing", "killed mid-action"
    if through:
        assert stack.relay.release() == [200]
    else:
        assert stack.relay.drop() == 1
    restarted = time.time()
    svc = restarted_and_adopted(stack, child)
    serving = httpx.get(stack.ms_url + "/admin/versions", timeout=10).json()
    act = stack.action(svc, incident_id, action_id)
    assert serving["current"] == serving["running"] == ("v1" if through else "v2")
    assert readback(act)["shown"]["serving"] == serving["current"]
    if through:
        assert act["status"] == "verifying" and act["executed_at"] >= restarted, "judged on fresh data only"
    else:
        assert act["status"] == "failed" and act["result"]["retryable"] is True
        assert "killed before the server showed the rollback done" in act["result"]["error"]


@pytest.mark.parametrize("through", [True, False], ids=["clamp-applied", "clamp-dropped"])
def test_sigkill_mid_clamp(stack, through):
    first = stack.serve()
    child = stack.child()
    httpx.post(stack.ms_url + "/admin/faults", json={"fault": "nonfinite_weights", "params": {"count": 8}},
               timeout=60).raise_for_status()
    incident_id, action_id = stack.seed(ActionKind.CLAMP)
    stack.relay.arm(lambda head, body: head.startswith(b"POST /admin/clamp ")
                    and json.loads(body)["dry_run"] is False)
    stack.approve(first, incident_id, action_id)
    assert stack.relay.wait_held(60) == [b"POST /admin/clamp HTTP/1.1"]
    stack.kill(first)
    assert stack.recorded(action_id) == "executing", "killed mid-action"
    if through:
        assert stack.relay.release() == [200]
    else:
        assert stack.relay.drop() == 1
    restarted = time.time()
    svc = restarted_and_adopted(stack, child)
    nonfinite = sum(t["nonfinite"] for t in httpx.get(stack.ms_url + "/admin/weights", timeout=10).json()["tensors"])
    act = stack.action(svc, incident_id, action_id)
    assert nonfinite == (0 if through else 8)
    assert readback(act)["shown"]["nonfinite"] == nonfinite
    if through:
        assert act["status"] == "verifying" and act["executed_at"] >= restarted, "judged on fresh data only"
    else:
        assert act["status"] == "failed" and act["result"]["retryable"] is True
        assert "killed before the server showed the clamp done" in act["result"]["error"]


def test_sigkill_while_the_restarted_model_server_comes_up(stack):
    first = stack.serve()
    old = stack.child()
    planner = LocalProcess(stack.command, stack.relay.url + "/healthz", stack.tmp / "model-server.log",
                           pid_file=stack.pid_file)
    assert planner.start() == old      # adopts the running server, to plan the restart of that instance
    incident_id, action_id = stack.seed(ActionKind.RESTART, planner)
    # Hold the health checks of the new instance: the restart waits on them, with the old one gone.
    stack.relay.arm(lambda head, body: head.startswith(b"GET /healthz ") and stack.child() != old)
    stack.approve(first, incident_id, action_id)
    assert stack.relay.wait_held(60)
    stack.kill(first)
    assert stack.recorded(action_id) == "executing", "killed mid-action"
    new = stack.child()
    assert new != old and not alive(old) and alive(new)
    # A held health check changes nothing on the server: let it through or drop it, the outcome is one.
    stack.relay.drop()
    svc = restarted_and_adopted(stack, new)
    act = stack.action(svc, incident_id, action_id)
    assert act["status"] == "verifying"
    assert readback(act)["shown"] == {"planned": old, "instance": new}
    svc.stop()
    assert not alive(new), "the adopted model server is stopped with the service"


def test_sigkill_before_the_restart_reached_the_model_server(stack):
    # A restart sends no request before it signals the old instance, so no relay can hold the kill there;
    # the nearest real thing: the service is SIGKILLed once the approval is committed (the record says
    # executing), before its executor acted. The record is written as that kill leaves it.
    first = stack.serve()
    old = stack.child()
    planner = LocalProcess(stack.command, stack.relay.url + "/healthz", stack.tmp / "model-server.log",
                           pid_file=stack.pid_file)
    assert planner.start() == old
    incident_id, action_id = stack.seed(ActionKind.RESTART, planner)
    stack.kill(first)
    store = Store(stack.db)
    try:
        rec = store.action(action_id)
        store.save_action(replace(rec, status=ActionStatus.EXECUTING).logged(time.time(), "approved",
                                                                             actor="alice"))
    finally:
        store.close()
    svc = restarted_and_adopted(stack, old)
    act = stack.action(svc, incident_id, action_id)
    assert act["status"] == "failed" and act["result"]["retryable"] is True
    assert readback(act)["shown"] == {"planned": old, "instance": old}
    assert "killed before the server showed the restart done" in act["result"]["error"]
