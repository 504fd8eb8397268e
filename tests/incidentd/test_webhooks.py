"""Alertmanager notifications become evidence exactly once; bad payloads get a 422 naming the field."""
from __future__ import annotations

import copy
import datetime as dt

import pytest
from fastapi.testclient import TestClient

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.errors import StorageError
from incidentd.runtime import Runtime
from tests.incidentd.keyring import bearer


def ago(**delta) -> str:
    """An RFC 3339 time relative to now, so the tests pass on any date."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat().replace("+00:00", "Z")


# A real Alertmanager v4 notification (shape as sent by Alertmanager 0.25+).
PAYLOAD = {
    "version": "4", "groupKey": "{}:{alertname=\"ModelAccuracyLow\"}", "truncatedAlerts": 0,
    "status": "firing", "receiver": "incidentd",
    "groupLabels": {"alertname": "ModelAccuracyLow"},
    "commonLabels": {"alertname": "ModelAccuracyLow", "model": "digits", "severity": "critical"},
    "commonAnnotations": {"summary": "accuracy of digits below 0.9"},
    "externalURL": "http://alertmanager:9093",
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "ModelAccuracyLow", "model": "digits", "severity": "critical",
                   "signal": "accuracy"},
        "annotations": {"summary": "accuracy of digits below 0.9"},
        "startsAt": ago(minutes=30), "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=...", "fingerprint": "c2a6e1d2f3b4a5c6",
    }],
}


@pytest.fixture()
def runtime(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", webhook_token="s3cret"))
    yield rt
    rt.stop()


@pytest.fixture()
def client(runtime):
    with TestClient(create_app(runtime.settings, runtime, start=False)) as c:
        c.headers.update(bearer(runtime.store, "oncall"))
        yield c


def resolved(payload):
    p = copy.deepcopy(payload)
    p["status"] = "resolved"
    p["alerts"][0]["status"] = "resolved"
    p["alerts"][0]["endsAt"] = ago(minutes=25)
    return p


def test_same_notification_100_times_opens_exactly_one_incident(client, runtime):
    for _ in range(100):
        assert client.post("/webhooks/alertmanager", json=PAYLOAD).status_code == 200
    runtime.loop.cycle()
    runtime.loop.cycle()
    incs = client.get("/incidents").json()["incidents"]
    assert len(incs) == 1
    assert incs[0]["model"] == "digits"
    detail = client.get(f"/incidents/{incs[0]['id']}").json()
    assert [e["name"] for e in detail["evidence"]] == ["ModelAccuracyLow"]


def test_incident_resolves_when_the_alert_resolves_and_a_stale_firing_never_reopens(client, runtime):
    runtime.settings.detection.resolve_after_seconds = 0
    client.post("/webhooks/alertmanager", json=PAYLOAD)
    runtime.loop.cycle()
    client.post("/webhooks/alertmanager", json=resolved(PAYLOAD))
    runtime.loop.cycle()
    runtime.loop.cycle()
    incs = client.get("/incidents").json()["incidents"]
    assert [i["status"] for i in incs] == ["resolved"]
    # Alertmanager may deliver a late firing message for the same alert after the resolve.
    r = client.post("/webhooks/alertmanager", json=PAYLOAD)
    assert r.status_code == 200
    runtime.loop.cycle()
    assert [i["status"] for i in client.get("/incidents").json()["incidents"]] == ["resolved"]


def test_an_alert_firing_for_days_still_counts_as_evidence(client, runtime):
    old = copy.deepcopy(PAYLOAD)
    old["alerts"][0]["startsAt"] = ago(days=3)
    assert client.post("/webhooks/alertmanager", json=old).status_code == 200
    runtime.loop.cycle()
    incs = client.get("/incidents").json()["incidents"]
    assert [i["status"] for i in incs] == ["open"]
    detail = client.get(f"/incidents/{incs[0]['id']}").json()
    assert [e["name"] for e in detail["evidence"]] == ["ModelAccuracyLow"]


def test_refire_after_resolve_opens_a_new_incident(client, runtime):
    runtime.settings.detection.resolve_after_seconds = 0
    client.post("/webhooks/alertmanager", json=PAYLOAD)
    runtime.loop.cycle()
    client.post("/webhooks/alertmanager", json=resolved(PAYLOAD))
    runtime.loop.cycle()
    runtime.loop.cycle()
    again = copy.deepcopy(PAYLOAD)
    again["alerts"][0]["startsAt"] = ago(minutes=1)
    client.post("/webhooks/alertmanager", json=again)
    runtime.loop.cycle()
    statuses = sorted(i["status"] for i in client.get("/incidents").json()["incidents"])
    assert statuses == ["open", "resolved"]


@pytest.mark.parametrize("mutate,field", [
    (lambda p: p["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
    (lambda p: p.__setitem__("version", "3"), "version"),
    (lambda p: p["alerts"][0].__setitem__("startsAt", "yesterday"), "alerts.0.startsAt"),
    (lambda p: p.__setitem__("alerts", "nope"), "alerts"),
])
def test_malformed_payload_is_422_naming_the_field_and_nothing_is_lost(client, mutate, field):
    assert client.post("/webhooks/alertmanager", json=PAYLOAD).status_code == 200
    bad = copy.deepcopy(PAYLOAD)
    mutate(bad)
    r = client.post("/webhooks/alertmanager", json=bad)
    assert r.status_code == 422
    assert any(f.startswith(field) for f in r.json()["fields"]), r.json()
    assert client.get("/healthz").status_code == 200
    # The notification accepted before is still there.
    assert client.post("/webhooks/alertmanager", json=PAYLOAD).json()["duplicates"] == 1


def test_not_json_at_all_is_400(client):
    r = client.post("/webhooks/alertmanager", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_legacy_webhook_token_still_ingests_but_reads_nothing(client):
    legacy = {"Authorization": "Bearer s3cret"}
    assert client.post("/webhooks/alertmanager", json=PAYLOAD, headers=legacy).status_code == 200
    assert client.post("/events", json={"model": "digits", "kind": "deploy"}, headers=legacy).status_code == 200
    assert client.get("/incidents", headers=legacy).status_code == 403


def test_wrong_token_is_401(client):
    r = client.post("/webhooks/alertmanager", json=PAYLOAD, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_storage_failure_answers_5xx_so_alertmanager_retries(client, runtime, monkeypatch):
    def broken(*a, **k):
        raise StorageError("disk full")

    monkeypatch.setattr(runtime.store, "apply_notifications", broken)
    r = client.post("/webhooks/alertmanager", json=PAYLOAD)
    assert r.status_code == 503
    assert "disk full" not in r.text   # no internals in 5xx bodies


def test_unknown_incident_is_404_and_resolve_is_idempotent(client, runtime):
    assert client.get("/incidents/inc-nope").status_code == 404
    client.post("/webhooks/alertmanager", json=PAYLOAD)
    runtime.loop.cycle()
    inc = client.get("/incidents").json()["incidents"][0]
    assert client.post(f"/incidents/{inc['id']}/ack", json={"note": "looking"}).json()["status"] == "acknowledged"
    for _ in range(2):
        assert client.post(f"/incidents/{inc['id']}/resolve").json()["status"] == "resolved"
    timeline = client.get(f"/incidents/{inc['id']}").json()["timeline"]
    kinds = [t["kind"] for t in timeline]
    assert kinds.count("resolved") == 1 and "acknowledged" in kinds
    # The actor is the key that made the request, never a field of the body.
    assert {t["data"]["actor"] for t in timeline if t["kind"] in ("acknowledged", "resolved")} == {"key:oncall"}
    r = client.post(f"/incidents/{inc['id']}/ack", json={"actor": "mallory"})
    assert r.status_code == 422 and any(f.startswith("actor") for f in r.json()["fields"])


def test_change_events_are_validated(client):
    assert client.post("/events", json={"model": "digits", "kind": "deploy", "version": "v3"}).status_code == 200
    r = client.post("/events", json={"model": "digits", "kind": "teleport"})
    assert r.status_code == 422 and any(f.startswith("kind") for f in r.json()["fields"])


# A Grafana-alerting webhook notification (Grafana 11 unified alerting, as documented).
GRAFANA = {
    "receiver": "incidentd", "status": "firing", "orgId": 1, "version": "1", "groupKey": "{}:{}",
    "truncatedAlerts": 0, "title": "[FIRING:1] ModelLatencyHigh", "state": "alerting", "message": "...",
    "groupLabels": {}, "commonLabels": {"alertname": "ModelLatencyHigh"}, "commonAnnotations": {},
    "externalURL": "http://grafana:3000/",
    "alerts": [{
        "status": "firing", "labels": {"alertname": "ModelLatencyHigh", "model": "digits", "signal": "latency"},
        "annotations": {"summary": "p90 latency of digits above 250ms"},
        "startsAt": (dt.datetime.now(dt.timezone(dt.timedelta(hours=2))) - dt.timedelta(minutes=20)).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://grafana:3000/alerting/1afz29v7z/edit", "fingerprint": "c6eadffa33fcdf37",
        "silenceURL": "http://grafana:3000/alerting/silence/new", "dashboardURL": "", "panelURL": "",
        "values": {"B": 0.31, "C": 1},
    }],
}


def test_grafana_alerting_webhook_opens_one_incident(client, runtime):
    for _ in range(5):
        assert client.post("/webhooks/grafana", json=GRAFANA).status_code == 200
    runtime.loop.cycle()
    incs = client.get("/incidents").json()["incidents"]
    assert len(incs) == 1
    ev = client.get(f"/incidents/{incs[0]['id']}").json()["evidence"]
    assert [e["attributes"]["source"] for e in ev] == ["grafana"]
    bad = copy.deepcopy(GRAFANA)
    del bad["alerts"][0]["startsAt"]
    r = client.post("/webhooks/grafana", json=bad)
    assert r.status_code == 422 and any(f.startswith("alerts.0.startsAt") for f in r.json()["fields"])
