"""The service's own /metrics follow Prometheus conventions: prefix, HELP, _total counters, bounded labels."""
from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime


def test_service_metrics_follow_conventions(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", security={"metrics_public": True}))
    with TestClient(create_app(rt.settings, rt, start=False)) as c:
        rt.detect_job()
        text = c.get("/metrics").text
    rt.stop()
    families = list(text_string_to_metric_families(text))
    assert families
    for f in families:
        assert f.name.startswith("incidentd_"), f.name
        assert f.documentation, f"{f.name} has no HELP"
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        for s in f.samples:
            assert set(s.labels) <= {"component", "kind", "outcome", "source", "le"}, (f.name, s.labels)
    names = {f.name for f in families}
    assert {"incidentd_detection_cycles", "incidentd_detection_cycle_duration_seconds",
            "incidentd_incidents_open"} <= names
