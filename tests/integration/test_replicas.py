"""Three `incidentd serve` replicas on one real PostgreSQL share a model; one is SIGKILLed mid-action.

The target is the demo model server (v1 known-good, v2 a bad deploy). An accuracy alert and a deploy
event make the rules recommend a rollback, set to need approval. The model server is paused (SIGSTOP) and
the plan is approved through a replica that does not own the model: the owner claims the action and
blocks in the model server's admin call; it is SIGKILLed there. Then: another replica takes the model
over, reconciles the orphaned action instead of running it again, there is one incident, the rollback
reached the model server at most once and was claimed once, and every alert notification answered 2xx
by any replica is stored.

The replicas run with the default lease (one detection interval, renewed every third of it between
cycles). The takeover is counted in the survivor's own detection cycles, from the cycle records each
replica logs at DEBUG: the survivor took the model in its first or second cycle after the owner died, and
not before the owner's last lease expired.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, func, select

from incidentd.auth.keys import create_key
from incidentd.auth.scopes import Scope
from incidentd.replicas import preferred
from incidentd.storage import Repository
from incidentd.storage.tables import actions, alert_notifications, incidents, model_leases, timeline
from tests.integration.conftest import REPO, free_port, wait_until
from tests.model_server.conftest import template_registry  # noqa: F401  (session fixture)
from tests.postgres import PostgresServer

MODEL = "digits"
DETECT_INTERVAL = 2.0
DEFAULT_LEASE = DETECT_INTERVAL                # what a replica uses when lease_seconds is not set


def cycles(log: Path, renewals: bool = False) -> list[tuple[float, list[str]]]:
    """A replica's detection cycles (with ``renewals``: its lease renewals between cycles too), from its JSON
    log: (when, models it owned after it)."""
    out = []
    for line in log.read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("logger") == "incidentd.replicas":
            if "cycle" in doc:
                out.append((float(doc["at"]), list(doc["owned"])))
            elif renewals and "renewed_at" in doc:
                out.append((float(doc["renewed_at"]), list(doc["owned"])))
    return sorted(out)


def alert(i: int, status: str = "firing") -> dict[str, Any]:
    starts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(microsecond=0)
    return {"receiver": "incidentd", "status": status, "version": "4", "groupKey": f"{{}}:{{alertname=\"Acc{i}\"}}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "truncatedAlerts": 0, "alerts": [{
        "status": status, "labels": {"alertname": f"Acc{i}", "model": MODEL, "signal": "accuracy"},
        "annotations": {"summary": "accuracy dropped"}, "startsAt": starts.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"fp{i:04d}"}]}


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Replica:
    def __init__(self, name: str, workdir: Path, db_url: str, model_server: str):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = {"database_url": db_url, "replica_id": name, "model_server_url": model_server,
               "detect_interval_seconds": DETECT_INTERVAL, "scrape_interval_seconds": 2.0,
               "database": str(workdir / f"{name}.db"), "models": [MODEL],
               "remediation": {"modes": {"rollback": "approve"}, "act_after_cycles": 2,
                               "verify_seconds": 30.0}}
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "incidentd.cli", "serve", "--config",
                                          str(self.config), "--port", str(self.port), "--log-level",
                                          "DEBUG"], env=env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        assert wait_until(lambda: healthy(self.url), 60), \
            self.log.read_text()[-3000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture()
def model_server(template_registry: Path, tmp_path: Path):  # noqa: F811
    import shutil

    registry = tmp_path / "registry"
    shutil.copytree(template_registry, registry, symlinks=True)
    port = free_port()
    log = tmp_path / "model-server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "incidentd.model_server", "--registry", str(registry),
                                 "--port", str(port), "--log-level", "warning", "--device", "cpu"],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: healthy(url), 90), log.read_text()[-3000:]
    yield url, proc, log
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(15)


def test_three_replicas_one_killed_mid_action(postgres: PostgresServer, model_server, tmp_path: Path) -> None:  # noqa: F811
    ms_url, ms_proc, ms_log = model_server
    db_url = postgres.create_database()
    repo = Repository(db_url, migrate_schema=True)                    # `incidentd db upgrade`
    # One key for the on-call engineer and Alertmanager alike; every replica reads it from the database.
    key = create_key(repo, "oncall", frozenset({Scope.READ, Scope.RESPOND, Scope.APPROVE, Scope.INGEST})).key
    repo.close()
    auth = {"Authorization": f"Bearer {key}"}
    engine = create_engine(db_url)
    httpx.post(ms_url + "/admin/load", json={"version": "v2"}, timeout=30).raise_for_status()   # the bad deploy
    loads_before = ms_log.read_text().count("model load:")

    reps = [Replica(f"r{i}", tmp_path, db_url, ms_url) for i in range(3)]
    try:
        for r in reps:
            r.start()
        by_name = {r.name: r for r in reps}

        def scalar(stmt: Any) -> Any:
            with engine.connect() as conn:
                return conn.execute(stmt).scalar()

        # One replica owns the model: the one rendezvous hashing picks among the three live replicas (until
        # all three have joined, an earlier one may hold it for a moment).
        expected_owner = preferred(MODEL, [r.name for r in reps])
        assert wait_until(lambda: scalar(select(model_leases.c.owner).where(model_leases.c.model == MODEL))
                          == expected_owner, 30)
        owner = by_name[expected_owner]
        others = [r for r in reps if r is not owner]

        # The deploy event, then alerts, arrive at every replica; every 2xx must be stored.
        httpx.post(others[0].url + "/events", json={"model": MODEL, "kind": "deploy", "version": "v2",
                                                    "previous_version": "v1", "at": time.time() - 600},
                   headers=auth, timeout=10).raise_for_status()
        sent: set[str] = set()
        for i, r in enumerate(reps * 3):
            resp = httpx.post(r.url + "/webhooks/alertmanager", json=alert(i % 4), headers=auth, timeout=10)
            assert resp.status_code == 200, resp.text
            sent.add(f"fp{i % 4:04d}")

        # The owner plans the rollback; it waits for approval.
        def awaiting() -> bool:
            return scalar(select(func.count()).select_from(actions)
                          .where(actions.c.status == "awaiting_approval")) == 1
        assert wait_until(awaiting, 60), owner.log.read_text()[-3000:]
        with engine.connect() as conn:
            action_id, incident_id = conn.execute(select(actions.c.id, actions.c.incident_id)).one()
            lease_expiry = float(conn.execute(select(model_leases.c.expires_at)
                                              .where(model_leases.c.model == MODEL)).scalar_one())
        # The owner renews with the default lease: the expiry is one of its cycles or renewals plus a lease.
        assert wait_until(lambda: any(math.isclose(at + DEFAULT_LEASE, lease_expiry, rel_tol=0, abs_tol=1e-3)
                                      for at, _ in cycles(owner.log, renewals=True)), 10), lease_expiry

        # Pause the model server, approve through a replica that does not own the model.
        os.kill(ms_proc.pid, signal.SIGSTOP)
        resp = httpx.post(f"{others[1].url}/incidents/{incident_id}/actions/{action_id}/approve",
                          headers=auth, timeout=10)
        assert resp.status_code == 200, resp.text
        claimed = select(actions.c.claimed_by).where(actions.c.id == action_id)
        assert wait_until(lambda: scalar(claimed) is not None, 20)
        runner = by_name[scalar(claimed)]
        assert runner is owner                                   # only the lease holder runs actions
        assert owner.proc is not None
        killed_at = time.time()
        owner.proc.send_signal(signal.SIGKILL)                   # mid-action: blocked in the admin call
        owner.proc.wait(10)
        os.kill(ms_proc.pid, signal.SIGCONT)

        # Alerts keep arriving at the survivors.
        for i, r in enumerate(others * 2):
            resp = httpx.post(r.url + "/webhooks/alertmanager", json=alert(10 + i), headers=auth, timeout=10)
            assert resp.status_code == 200, resp.text
            sent.add(f"fp{10 + i:04d}")

        # A survivor takes the model over and reconciles the orphan instead of running it again.
        def taken_over() -> bool:
            o = scalar(select(model_leases.c.owner).where(model_leases.c.model == MODEL))
            return o in {r.name for r in others}
        assert wait_until(taken_over, 15)
        heir = by_name[preferred(MODEL, [r.name for r in others])]
        assert scalar(select(model_leases.c.owner).where(model_leases.c.model == MODEL)) == heir.name

        # Counted in the heir's own cycles: it took the model in its first or second cycle after the owner
        # died, and not before the owner's last lease expired. (Its log is read once it logged the takeover.)
        def heir_owns_since_kill() -> bool:
            return any(at > killed_at and MODEL in owned for at, owned in cycles(heir.log))
        assert wait_until(heir_owns_since_kill, 15)
        last_renewal = max(at for at, owned in cycles(owner.log, renewals=True) if MODEL in owned)
        expiry = last_renewal + DEFAULT_LEASE
        heir_cycles = [(at, owned) for at, owned in cycles(heir.log) if at > killed_at]
        took_at = next(at for at, owned in heir_cycles if MODEL in owned)
        assert took_at > expiry, (took_at, expiry)
        since_kill = [at for at, _ in heir_cycles if at <= took_at]
        assert 1 <= len(since_kill) <= 2, (f"took over in cycle {len(since_kill)} after the kill",
                                           heir_cycles, killed_at, expiry)

        def reconciled() -> bool:
            return scalar(select(func.count()).select_from(timeline).where(
                timeline.c.incident_id == incident_id, timeline.c.kind == "action_reconciled")) == 1
        assert wait_until(reconciled, 20), "\n".join(r.log.read_text()[-2000:] for r in others)
        assert scalar(select(actions.c.status).where(actions.c.id == action_id)) != "executing"
        assert scalar(select(actions.c.claimed_by).where(actions.c.id == action_id)) == owner.name

        # No duplicate incident, one action, executed at most once at the model server.
        assert scalar(select(func.count()).select_from(incidents).where(incidents.c.model == MODEL)) == 1
        assert scalar(select(func.count()).select_from(actions)) == 1
        assert wait_until(lambda: healthy(ms_url), 20)
        assert ms_log.read_text().count("model load:") - loads_before <= 1
        # No alert lost: every notification answered 2xx is stored, once.
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(select(alert_notifications.c.fingerprint))}
        assert stored == sent
        # Any replica answers the API with the same state.
        views = [httpx.get(f"{r.url}/incidents/{incident_id}", headers=auth, timeout=10).json() for r in others]
        assert views[0]["actions"] == views[1]["actions"]
    finally:
        for r in reps:
            r.stop()
        engine.dispose()
