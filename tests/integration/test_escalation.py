"""Escalations reach people: incidentd sends them to a real Alertmanager, whose route delivers them to a
receiver in this test, and resolves them when the incident resolves."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from diagnosis import lifecycle
from diagnosis.types import ActionKind, FaultDomain, Hypothesis
from incidentd.config import Settings
from incidentd.runtime import Runtime

from .conftest import AlertmanagerServer, wait_until


class Receiver:
    """What Alertmanager's webhook_config posts to (a team's pager, chat or mail bridge)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, incident: str, status: str) -> list[dict[str, Any]]:
        return [a for n in self.notifications for a in n["alerts"]
                if a["labels"].get("incident") == incident and a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def routed(alertmanager: AlertmanagerServer):
    receiver = Receiver()
    alertmanager.configure({
        "route": {"receiver": "null", "routes": [{
            "receiver": "oncall", "matchers": ['source="incidentd"'], "group_by": ["incident"],
            "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"}]},
        "receivers": [{"name": "null"},
                      {"name": "oncall", "webhook_configs": [{"url": receiver.url, "send_resolved": True}]}]})
    yield alertmanager, receiver
    alertmanager.configure({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    receiver.close()


def test_an_escalation_reaches_the_receiver_and_is_resolved_with_the_incident(routed, tmp_path):
    am, receiver = routed
    rt = Runtime(Settings(database=tmp_path / "db.sqlite",
                          notify={"alertmanager_url": [am.url], "external_url": "http://incidentd.example:8080"}))
    try:
        now = time.time()
        hyp = Hypothesis(FaultDomain.HARDWARE, "hardware.process_crash", 0.9, ActionKind.RESTART,
                         "the model server does not answer", ("ev1",), ("process-down",))
        inc, entries = lifecycle.open_incident("digits", [hyp], ["ev1"], now, ["target_down: model_up = 0"])
        inc, entry = lifecycle.escalate(inc, now, "restart not started: rate limit")
        rt.store.save_incident(inc, [*entries, entry])
        rt.notify_job()
        assert wait_until(lambda: bool(receiver.alerts(inc.id, "firing")), timeout=30), receiver.notifications
        (alert,) = receiver.alerts(inc.id, "firing")[:1]
        assert alert["labels"]["alertname"] == "IncidentdEscalation"
        assert (alert["labels"]["model"], alert["labels"]["root_cause"], alert["labels"]["severity"]) == (
            "digits", "hardware.process_crash", "critical")
        assert alert["annotations"]["incident_url"] == f"http://incidentd.example:8080/incidents/{inc.id}"
        assert "hardware.process_crash" in alert["annotations"]["hypotheses"]
        done, entry = lifecycle.resolve(inc, time.time(), "resolved by alice", "alice")
        rt.store.save_incident(done, [entry])
        rt.notify_job()
        assert wait_until(lambda: bool(receiver.alerts(inc.id, "resolved")), timeout=30), receiver.notifications
    finally:
        rt.stop()
