"""Prometheus rule → Alertmanager (production routing, bearer API key) → incidentd's real webhook.

The alert must open exactly one incident, however many times Alertmanager delivers it, and the
incident must resolve when the alert resolves.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest
import yaml

from .conftest import AlertmanagerServer, PrometheusServer, free_port, http, wait_until
from .test_prometheus import ALERTS, AM_CONFIG, exporter  # noqa: F401  (fixture)


class Service:
    """The running service and the keys the test made for it: ``ingest`` for Alertmanager, ``read`` for us."""

    def __init__(self, url: str, ingest_key: str, read_key: str):
        self.url, self.ingest_key = url, ingest_key
        self.headers = {"Authorization": f"Bearer {read_key}"}


@pytest.fixture()
def incidentd_service(tmp_path):
    app_mod = pytest.importorskip("incidentd.api.app")
    config = pytest.importorskip("incidentd.config")
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    settings = config.Settings(host="127.0.0.1", port=port, database=tmp_path / "incidentd.db",
                               detect_interval_seconds=1.0, scrape_interval_seconds=1.0,
                               detection=config.DetectionSettings(resolve_after_seconds=0))
    app = app_mod.create_app(settings)
    from incidentd.auth.keys import create_key
    from incidentd.auth.scopes import Scope

    store = app.state.runtime.store
    ingest = create_key(store, "alertmanager", frozenset({Scope.INGEST})).key
    read = create_key(store, "test-reader", frozenset({Scope.READ})).key
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: http("GET", f"{url}/healthz")[0] == 200, 30), "incidentd did not start"
    yield Service(url, ingest, read)
    server.should_exit = True
    thread.join(30)


def _incidents(svc: Service) -> list[dict[str, Any]]:
    status, body = http("GET", f"{svc.url}/incidents?model=digits", headers=svc.headers)
    assert status == 200, body
    return body["incidents"]


def _notifications(svc: Service, outcome: str) -> float:
    """incidentd's count of Alertmanager notifications with this outcome (accepted, duplicate)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http("GET", f"{svc.url}/metrics", headers=svc.headers)   # /metrics needs a credential
    assert status == 200, text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "incidentd_webhook_notifications_total" and s.labels.get("outcome") == outcome)


def test_alert_opens_one_incident_that_resolves(prometheus: PrometheusServer, alertmanager: AlertmanagerServer,
                                                exporter, incidentd_service, tmp_path):  # noqa: F811
    port, g = exporter
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    token_file = tmp_path / "token"
    token_file.write_text(incidentd_service.ingest_key + "\n")
    for r in cfg["receivers"]:
        for hook in r.get("webhook_configs", []):
            hook["url"] = f"{incidentd_service.url}/webhooks/alertmanager"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    for route in [cfg["route"], *cfg["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="2s")  # many re-deliveries
    alertmanager.configure(cfg)
    g["weights"].labels("digits", "v1").set(0)
    try:
        prometheus.configure(
            [{"job_name": "incidentd-sidecar", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
            rule_files=[str(ALERTS)], alertmanagers=[f"127.0.0.1:{alertmanager.port}"])
        assert wait_until(lambda: bool(prometheus.query('model_weights_nonfinite{job="incidentd-sidecar"}')), 30)
        g["weights"].labels("digits", "v1").set(5)
        assert wait_until(lambda: bool(_incidents(incidentd_service)), 90), "no incident opened"
        # Alertmanager keeps re-delivering (repeat_interval 2s): wait until incidentd has seen the same
        # firing alert delivered again at least twice, then it must still have opened one incident
        assert wait_until(lambda: _notifications(incidentd_service, "duplicate") >= 2, 60), \
            _notifications(incidentd_service, "duplicate")
        open_incidents = _incidents(incidentd_service)
        assert len(open_incidents) == 1, open_incidents
        assert _notifications(incidentd_service, "accepted") >= 1

        g["weights"].labels("digits", "v1").set(0)
        assert wait_until(lambda: all(i["status"] == "resolved" for i in _incidents(incidentd_service)), 120), \
            _incidents(incidentd_service)
        assert len(_incidents(incidentd_service)) == 1
    finally:
        prometheus.configure([])
        alertmanager.configure({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})

