"""Writers that cannot race: concurrent webhook notifications, an ack or resolve during a cycle, one action per key.

The webhook test runs the real app in a real HTTP server (uvicorn, its worker threads) on a SQLite file and
sends each firing/resolved pair of one alert episode from two threads released together, as an
Alertmanager HA pair does.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
import uvicorn

from diagnosis import lifecycle
from diagnosis.types import ActionKind, FaultDomain, Hypothesis, IncidentStatus
from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from incidentd.store import DuplicateAction
from remediation.types import ActionMode, ActionRecord, ActionStatus

PAIRS = 300


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _notification(fingerprint: str, status: str, starts: dt.datetime) -> dict:
    alert = {"status": status, "labels": {"alertname": "ModelAccuracyLow", "model": "digits"},
             "annotations": {"summary": "accuracy low"}, "startsAt": _iso(starts),
             "endsAt": _iso(starts + dt.timedelta(minutes=5)) if status == "resolved" else "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": fingerprint}
    return {"version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": status, "receiver": "incidentd",
            "alerts": [alert]}


@pytest.fixture()
def served(tmp_path):
    # The webhook bucket (500 at once, 50/s) is tested on its own; 600 notifications in a few seconds are
    # about races here, not about the rate limit.
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", webhook_token="s3cret",
                          security={"webhook_burst": 4 * PAIRS}))
    server = uvicorn.Server(uvicorn.Config(create_app(rt.settings, rt, start=False), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:       # waits on the server's own readiness flag, not on a duration
        if not thread.is_alive():
            pytest.fail("the HTTP server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield rt, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()
    rt.stop()


def test_concurrent_firing_and_resolved_of_one_episode_never_leave_it_firing(served):
    rt, url = served
    starts = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    codes: list[int] = []
    retried: list[str] = []
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer s3cret"}, timeout=30) as client, \
            ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(PAIRS):
            barrier = threading.Barrier(2)

            def send(status: str, fp: str = f"fp{i:04d}", b: threading.Barrier = barrier) -> int:
                b.wait()
                r = client.post("/webhooks/alertmanager", json=_notification(fp, status, starts))
                # A write lock held longer than the fail-fast busy timeout answers 503 + Retry-After (a loaded
                # machine makes that happen); Alertmanager resends, and so does this test, until it is taken.
                for _ in range(20):
                    if r.status_code != 503:
                        break
                    assert r.headers["Retry-After"].isdigit()
                    retried.append(fp)
                    r = client.post("/webhooks/alertmanager", json=_notification(fp, status, starts))
                return r.status_code

            # Alternate which one is submitted first, so both arrival orders occur.
            order = ("firing", "resolved") if i % 2 else ("resolved", "firing")
            codes.extend(f.result() for f in [pool.submit(send, s) for s in order])
    assert codes == [200] * (2 * PAIRS), "every notification is taken, at once or on Alertmanager's retry"
    assert len(retried) < PAIRS // 10, f"{len(retried)} retries: the lock is held far too long"
    stuck = rt.store.models_with_open_alerts()
    open_alerts = rt.store.open_alerts("digits")
    assert (stuck, len(open_alerts)) == ([], 0), f"{len(open_alerts)} of {PAIRS} episodes left firing"


def test_an_ack_or_resolve_made_during_a_cycle_stays(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite"))
    try:
        t0 = time.time()
        inc, entries = lifecycle.open_incident("digits", [], [], t0, [], alerts=["ModelAccuracyLow"])
        rt.store.save_incident(inc, entries)
        cycle_copy = rt.store.active_incident(lifecycle.dedup_key("digits"))   # a cycle reads it ...
        acked, entry = lifecycle.acknowledge(rt.store.incident(inc.id), time.time(), "acknowledged", "alice")
        rt.store.save_incident(acked, [entry])                                 # ... a person acks ...
        hyp = Hypothesis(FaultDomain.DATA, "data.covariate_drift", 0.8, ActionKind.NOTIFY, "drift", ("ev1",),
                         ("covariate-drift",))
        upd = lifecycle.update_incident(cycle_copy, [hyp], ["ev1"], t0)         # ... the cycle saves its copy
        assert upd.changed
        stored = rt.store.save_incident(upd.incident, upd.entries)
        assert stored.status is IncidentStatus.ACKNOWLEDGED
        assert rt.store.incident(inc.id).status is IncidentStatus.ACKNOWLEDGED
        assert "ev1" in rt.store.incident(inc.id).evidence_ids, "what the cycle found is kept too"
        # A resolve during a cycle that then mitigates its older copy: the incident stays resolved.
        cycle_copy = rt.store.incident(inc.id)
        done, entry = lifecycle.resolve(cycle_copy, time.time(), "resolved by alice", "alice")
        rt.store.save_incident(done, [entry])
        mitigated, entry = lifecycle.mitigate(cycle_copy, t0, "fix verified")
        rt.store.save_incident(mitigated, [entry])
        assert rt.store.incident(inc.id).status is IncidentStatus.RESOLVED
        assert rt.store.incident_version(inc.id) == 5
    finally:
        rt.stop()


def test_one_action_per_idempotency_key(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite"))
    try:
        first = ActionRecord(id="act-1", incident_id="inc-1", model="digits", kind=ActionKind.RESTART,
                             mode=ActionMode.AUTO, status=ActionStatus.EXECUTING, reason="r",
                             idempotency_key="inc-1:restart", created_at=1.0)
        rt.store.save_action(first)
        rt.store.save_action(replace(first, status=ActionStatus.VERIFYING))   # the same action, updated
        with pytest.raises(DuplicateAction):
            rt.store.save_action(replace(first, id="act-2"))
        assert [a.id for a in rt.store.actions(incident_id="inc-1")] == ["act-1"]
        assert rt.store.action("act-1").status is ActionStatus.VERIFYING
    finally:
        rt.stop()
