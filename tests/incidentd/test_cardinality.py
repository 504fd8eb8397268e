"""Bounded cardinality: alerts for models nobody configured open at most max_unknown_models incidents."""
from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from tests.incidentd.keyring import bearer


def _payload(models: list[str]) -> dict:
    starts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    return {"version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": "firing", "receiver": "incidentd",
            "alerts": [{"status": "firing", "labels": {"alertname": "HighErrors", "model": m},
                        "annotations": {"summary": f"errors of {m}"}, "startsAt": starts,
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"fp-{m}"}
                       for m in models]}


def _refused(rt: Runtime) -> float:
    return rt.metrics.registry.get_sample_value("incidentd_unknown_models_refused_total") or 0.0


def test_alerts_for_unknown_models_are_evidence_but_open_at_most_the_cap(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", models=["digits"],
                          detection={"max_unknown_models": 3}))
    try:
        with TestClient(create_app(rt.settings, rt, start=False)) as client:
            client.headers.update(bearer(rt.store, "oncall"))
            unknown = [f"junk-{i:03d}" for i in range(50)]
            r = client.post("/webhooks/alertmanager", json=_payload(["digits", *unknown]))
            assert r.status_code == 200 and r.json()["accepted"] == 51
        rt.loop.cycle()
        rt.loop.cycle()
        incidents = rt.store.incidents(limit=1000)
        assert sorted(i.model for i in incidents) == ["digits", "junk-000", "junk-001", "junk-002"]
        assert len(rt.store.models_with_open_alerts()) == 51, "every alert is kept as evidence"
        assert _refused(rt) == 47, "each refused label value counted once, not once per cycle"
    finally:
        rt.stop()
