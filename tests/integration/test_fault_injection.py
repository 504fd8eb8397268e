"""Fault injection against real processes: each test states the observable outcome it expects, and asserts it.

- sidecar killed: `monitoring_down` shows on /models and opens a hardware incident; no action runs.
- model server killed (SIGKILL): a hardware incident (process crash) opens, the supervised server is restarted
  and the restart verified on fresh data; no model action (rollback, clamp) runs. The sidecar's side (model_up 0
  and no model-derived gauge exported while it is down) is tested in tests/collector/test_sidecar_live.py.
- disk full: webhooks answer 503 with Retry-After; after space returns, the retries are stored.
- database locked: webhooks answer 503 with Retry-After at once; after the lock goes, the retry is stored.
- Prometheus unreachable during a verification window: no action runs, the action in verification is
  neither verified nor failed, the incident stays open, and the failed cycles are counted.
"""
from __future__ import annotations

import datetime as dt
import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from diagnosis.lifecycle import open_incident
from diagnosis.types import ActionKind, FaultDomain, Hypothesis, IncidentStatus
from incidentd.config import Settings
from incidentd.demo import Demo, Fault
from incidentd.runtime import Runtime
from remediation.types import ActionMode, ActionRecord, ActionStatus
from tests.incidentd.metrics_target import Sidecar

from .conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """`incidentd serve` as its own process."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = tmp / "incidentd.yaml"
        cfg.write_text(yaml.safe_dump({"port": self.port, "webhook_token": "s3cret",
                                        "security": {"anonymous_scopes": ["read"]}, **settings}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.log = tmp / "incidentd.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "incidentd.cli", "serve", "--config", str(cfg)],
                                     env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        if not wait_until(self._ready, timeout=60):
            self.stop()
            pytest.fail(f"incidentd did not start: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"incidentd exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=10).json()

    def alert(self, fp: str) -> httpx.Response:
        starts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
        body = {"version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": "firing", "receiver": "incidentd",
                "alerts": [{"status": "firing", "labels": {"alertname": "ModelAccuracyLow", "model": "digits"},
                            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp}]}
        return httpx.post(self.url + "/webhooks/alertmanager", json=body, timeout=30,
                          headers={"Authorization": "Bearer s3cret"})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture()
def services(tmp_path) -> Iterator[Any]:
    made: list[Service] = []

    def make(**settings: Any) -> Service:
        s = Service(tmp_path, **settings)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def test_sidecar_killed_is_monitoring_down_a_hardware_incident_and_no_action(services, tmp_path):
    target = Sidecar()
    target.body = 'model_up{model="digits",version="v1"} 1\nmodel_weights_nonfinite{model="digits",version="v1"} 0\n'
    svc = services(database=str(tmp_path / "db.sqlite"), scrape_targets=[target.url],
                   scrape_interval_seconds=0.5, detect_interval_seconds=0.5)
    assert wait_until(lambda: any(m["model"] == "digits" for m in svc.get("/models")["models"]), timeout=60)
    target.kill()
    assert wait_until(lambda: "monitoring_down" in next(
        m for m in svc.get("/models")["models"] if m["model"] == "digits")["active_signals"], timeout=60)
    signals = svc.get("/models/digits/signals")["signals"]
    assert signals["target_down"]["state"] == "no_data", "a dead sidecar never reads as a healthy model"
    assert wait_until(lambda: bool(svc.get("/incidents")["incidents"]), timeout=60)
    (inc,) = svc.get("/incidents")["incidents"]
    detail = svc.get(f"/incidents/{inc['id']}")
    assert detail["hypotheses"][0]["root_cause"] == "hardware.monitoring_down"
    assert detail["hypotheses"][0]["domain"] == "hardware"
    assert detail["actions"] == [], "a monitoring fault never triggers a model action"


def test_database_locked_answers_503_at_once_and_the_retry_is_stored(services, tmp_path):
    db = tmp_path / "db.sqlite"
    svc = services(database=str(db))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    r = svc.alert("fp-locked")
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
    holder.execute("ROLLBACK")
    holder.close()
    r = svc.alert("fp-locked")
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert "storage fault (database locked)" in svc.log.read_text()


@pytest.fixture()
def tiny_fs(tmp_path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full_answers_503_and_nothing_accepted_is_lost(services, tiny_fs):
    svc = services(database=str(tiny_fs / "db.sqlite"))
    assert svc.alert("fp-0").status_code == 200
    fd = os.open(tiny_fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 16384)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    codes = {}
    for i in range(1, 21):
        r = svc.alert(f"fp-{i}")
        assert r.status_code in (200, 503), r.text     # never a 500
        codes[f"fp-{i}"] = r.status_code
        if r.status_code == 503:
            assert r.headers["Retry-After"].isdigit()
    assert 503 in codes.values()
    (tiny_fs / "filler").unlink()
    for fp, code in codes.items():
        if code == 503:
            assert svc.alert(fp).status_code == 200     # Alertmanager's retry
    svc.stop()
    from incidentd.store import Store
    store = Store(tiny_fs / "db.sqlite")
    try:
        stored = {a.attributes["fingerprint"] for a in store.open_alerts("digits")}
    finally:
        store.close()
    assert stored == {"fp-0", *codes}


def test_prometheus_unreachable_during_verification_runs_no_action(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"            # nothing listens: Prometheus is unreachable
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", prometheus_url=dead, model_server_url=dead,
                          models=["digits"]))
    try:
        now = time.time()
        hyp = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "v2 is worse",
                         ("ev1",), ("accuracy-drop-after-deploy",))
        inc, entries = open_incident("digits", [hyp], ["ev1"], now - 30, [])
        rec = ActionRecord(id="act-1", incident_id=inc.id, model="digits", kind=ActionKind.ROLLBACK,
                           mode=ActionMode.AUTO, status=ActionStatus.VERIFYING, reason="r",
                           idempotency_key=f"{inc.id}:rollback", created_at=now - 20, executed_at=now - 20,
                           verify_deadline=now - 1, verify_signals=("accuracy",), root_cause="model.bad_version")
        rt.store.save_incident(inc.with_action(rec.id), entries)
        rt.store.save_action(rec)
        for _ in range(3):
            rt.detect_job()
        assert [a.status for a in rt.store.actions(model="digits")] == [ActionStatus.VERIFYING], \
            "no action ran, and the one in verification was judged on no data neither way"
        assert rt.store.incident(inc.id).status is IncidentStatus.OPEN and not rt.store.incident(inc.id).escalated
        assert rt.metrics.registry.get_sample_value("incidentd_errors_total", {"component": "detect"}) == 3
    finally:
        rt.stop()


def test_model_server_killed_is_a_process_crash_restarted_and_verified(tmp_path):
    demo = Demo(fast=True, workdir=tmp_path / "demo", plots=False)
    try:
        demo.start()
        demo.warm_up()
        # This test is about the kill: anything the warm-up opened on this shared machine is closed first, so
        # the kill gets an incident of its own rather than joining an open one.
        for inc in demo.incidents_since(0.0):
            demo.api("POST", f"/incidents/{inc['id']}/resolve", {"note": "before the kill"})
        killed = httpx.get(demo.model_url + "/healthz", timeout=5).json()["pid"]
        fault = Fault("model_server_killed", "hardware", ActionKind.RESTART,
                      lambda d: os.kill(killed, signal.SIGKILL), lambda d: None, "hardware.process_crash")
        res = demo.run_fault(fault)
        assert res.detected and res.domain == "hardware" and res.root_cause == "hardware.process_crash", res
        assert res.action == "restart" and res.remediated, res
        serving = httpx.get(demo.model_url + "/healthz", timeout=5).json()
        assert serving["pid"] != killed and serving["status"] == "ok"
        actions = demo.api("GET", f"/incidents/{res.incident_id}")["actions"]
        assert [a["kind"] for a in actions] == ["restart"], "a killed server is restarted, never rolled back"
        assert actions[0]["status"] == "verified"
    finally:
        demo.stop()
