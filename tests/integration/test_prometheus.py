"""Prometheus and Alertmanager configuration checked by their own tools and exercised for real."""
from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .conftest import DASHBOARDS, AlertmanagerServer, PrometheusServer, free_port, http, wait_until

PROM_DIR = DASHBOARDS / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
ALERTS = PROM_DIR / "rules" / "alerts.yml"
AM_CONFIG = DASHBOARDS / "alertmanager" / "alertmanager.yml"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


# --- static checks with the real tools ------------------------------------------------------

def test_promtool_check_rules(promtool):
    out = _run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert out.count("SUCCESS") == len(RULE_FILES)


def test_promtool_check_config(promtool, tmp_path):
    # The production config names /etc/prometheus/rules/*.yml; check it against our rule files.
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["rule_files"] = [str(PROM_DIR / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    _run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])


def test_promtool_unit_tests_cover_every_alert(promtool):
    test_file = PROM_DIR / "tests" / "alerts_test.yml"
    _run([promtool, "test", "rules", str(test_file)])
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load(test_file.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts == tested, f"alerting rules without a firing unit test: {sorted(alerts - tested)}"


def test_every_alert_routes_to_incidentd(amtool):
    _run([amtool, "check-config", str(AM_CONFIG)])
    alerts = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    for rule in alerts:
        labels = [f"{k}={v}" for k, v in {"alertname": rule["alert"], **rule["labels"]}.items()]
        proc = subprocess.run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.stdout.strip() == "incidentd", f"{rule['alert']} routes to {proc.stdout.strip()!r}"
    other = subprocess.run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", "alertname=Other"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert other.stdout.strip() == "default"


def test_alertmanager_webhook_uses_bearer_auth():
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    (receiver,) = [r for r in cfg["receivers"] if r["name"] == "incidentd"]
    # Every incidentd replica of docker-compose.yml gets every notification, each authenticated.
    hooks = receiver["webhook_configs"]
    assert sorted(h["url"] for h in hooks) == ["http://incidentd-2:8080/webhooks/alertmanager",
                                               "http://incidentd:8080/webhooks/alertmanager"]
    for hook in hooks:
        assert hook["send_resolved"] is True
        assert hook["http_config"]["authorization"]["type"] == "Bearer"
        assert hook["http_config"]["authorization"]["credentials_file"]


# --- Prometheus scraping for real -----------------------------------------------------------

@pytest.fixture()
def exporter():
    """A real /metrics endpoint exposing contract signals (what the sidecar exposes)."""
    reg = CollectorRegistry()
    port = free_port()
    gauges = {
        "latency": Gauge("model_latency_seconds", "Recent latency quantiles.", ["model", "version", "quantile"],
                         registry=reg),
        "accuracy": Gauge("model_accuracy_ratio", "Recent accuracy.", ["model", "version"], registry=reg),
        "weights": Gauge("model_weights_nonfinite", "Non-finite weights.", ["model", "version"], registry=reg),
        "requests": Counter("model_requests", "Requests.", ["model", "version"], registry=reg),
    }
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    yield port, gauges
    server.shutdown()
    server.server_close()


def test_prometheus_scrapes_and_query_range_reads_values_back(prometheus: PrometheusServer, exporter):
    port, g = exporter
    g["latency"].labels("digits", "v1", "0.99").set(0.123)
    g["accuracy"].labels("digits", "v1").set(0.875)
    g["requests"].labels("digits", "v1").inc(42)
    prometheus.configure([{"job_name": "scrape-test", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
    assert wait_until(lambda: bool(prometheus.query('model_accuracy_ratio{job="scrape-test"}')), 30)
    start = time.time() - 60
    q = urllib.parse.urlencode({"query": 'model_latency_seconds{job="scrape-test",quantile="0.99"}',
                                "start": start, "end": time.time(), "step": "1"})
    status, body = http("GET", f"{prometheus.url}/api/v1/query_range?{q}")
    assert status == 200 and body["status"] == "success"
    (series,) = body["data"]["result"]
    assert series["metric"]["model"] == "digits"
    assert float(series["values"][-1][1]) == pytest.approx(0.123)
    (acc,) = prometheus.query('model_accuracy_ratio{job="scrape-test"}')
    assert float(acc["value"][1]) == pytest.approx(0.875)
    (req,) = prometheus.query('model_requests_total{job="scrape-test"}')
    assert float(req["value"][1]) == 42
    try:
        from incidentd.sources.prometheus import PrometheusSource  # the service's reader, when present
    except ImportError:
        return
    src = PrometheusSource(prometheus.url)
    got = src.read("model_accuracy_ratio", {"job": "scrape-test"}, time.time() - 30, time.time(), 1.0)
    assert got and got[0].values[-1] == pytest.approx(0.875)


# --- an alert through Alertmanager into a webhook -------------------------------------------

class _Receiver(ThreadingHTTPServer):
    """A real HTTP endpoint that records the notifications Alertmanager delivers."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.notifications: list[dict[str, Any]] = []
        self.rejected = 0
        super().__init__(("127.0.0.1", free_port()), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self.server.rejected += 1
            self.send_response(401)
            self.end_headers()
            return
        self.server.notifications.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_alert_fires_through_alertmanager_and_resolves(prometheus: PrometheusServer,
                                                       alertmanager: AlertmanagerServer, exporter, tmp_path):
    port, g = exporter
    token = base64.urlsafe_b64encode(b"integration-test-token").decode()
    receiver = _Receiver(token)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        # The production routing tree, with the receiver's address, a real token file and
        # test-sized timers.
        cfg = yaml.safe_load(AM_CONFIG.read_text())
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        for r in cfg["receivers"]:
            for hook in r.get("webhook_configs", []):
                hook["url"] = f"http://127.0.0.1:{receiver.server_address[1]}/webhooks/alertmanager"
                hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        for route in [cfg["route"], *cfg["route"]["routes"]]:
            route.update(group_wait="1s", group_interval="1s")
        alertmanager.configure(cfg)

        g["weights"].labels("digits", "v1").set(0)
        prometheus.configure(
            [{"job_name": "incidentd-sidecar", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
            rule_files=[str(ALERTS)], alertmanagers=[f"127.0.0.1:{alertmanager.port}"])
        assert wait_until(lambda: bool(prometheus.query('model_weights_nonfinite{job="incidentd-sidecar"}')), 30)
        g["weights"].labels("digits", "v1").set(7)

        def firing() -> list[dict[str, Any]]:
            return [n for n in receiver.notifications if n["status"] == "firing"]

        assert wait_until(lambda: bool(firing()), 60), "no firing notification"
        note = firing()[0]
        assert note["version"] == "4" and note["receiver"] == "incidentd"
        assert note["groupLabels"] == {"alertname": "ModelNonFiniteWeights", "model": "digits", "version": "v1"}
        assert "truncatedAlerts" in note
        (alert,) = note["alerts"]
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["domain"] == "model"
        assert alert["fingerprint"] and alert["startsAt"]
        assert alert["annotations"]["summary"] == "digits v1 has 7 non-finite weights"
        assert receiver.rejected == 0

        g["weights"].labels("digits", "v1").set(0)
        assert wait_until(lambda: any(n["status"] == "resolved" for n in receiver.notifications), 90), \
            "no resolved notification"
        resolved = next(n for n in receiver.notifications if n["status"] == "resolved")
        assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
        assert resolved["alerts"][0]["startsAt"] == alert["startsAt"]
        assert resolved["alerts"][0]["endsAt"] > alert["startsAt"]
    finally:
        prometheus.configure([])
        receiver.shutdown()
        receiver.server_close()
