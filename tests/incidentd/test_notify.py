"""Which incidents reach people, and how: escalation, approval, notify; HA pairs; the generic webhook."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from diagnosis import lifecycle
from diagnosis.types import ActionKind, FaultDomain, Hypothesis
from incidentd.notify import Notifier, Reason, reason_for


class Capture:
    def __init__(self) -> None:
        self.batches: list[list[dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:   # noqa: N802
                outer.batches.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _incident(action: ActionKind, root_cause: str = "data.covariate_drift"):
    hyp = Hypothesis(FaultDomain.DATA, root_cause, 0.8, action, "why", ("ev1",), ("r",))
    inc, _ = lifecycle.open_incident("digits", [hyp], ["ev1"], 1000.0, [])
    return inc


def test_reasons():
    assert reason_for(_incident(ActionKind.NOTIFY), False) is Reason.NOTIFY
    assert reason_for(_incident(ActionKind.CLAMP), False) is None, "incidentd handles it alone"
    assert reason_for(_incident(ActionKind.CLAMP), True) is Reason.APPROVAL
    escalated, _ = lifecycle.escalate(_incident(ActionKind.CLAMP), 1001.0, "flapping")
    assert reason_for(escalated, True) is Reason.ESCALATION


def test_every_url_of_an_ha_pair_and_the_webhook_get_it_a_dead_one_is_logged_once(caplog):
    a, hook = Capture(), Capture()
    dead = "http://127.0.0.1:9"          # the discard port: nothing listens
    n = Notifier([a.url, dead], "http://incidentd:8080", webhook_url=hook.url + "/in", timeout=2.0)
    try:
        inc = _incident(ActionKind.NOTIFY)
        caplog.set_level(logging.ERROR)
        for now in (1010.0, 1020.0):
            n.sync([inc], set(), now)
        assert len(a.batches) == 2 and len(hook.batches) == 2, "re-sent each cycle, as Prometheus does"
        assert a.batches[0][0]["labels"]["alertname"] == "IncidentdNotify"
        assert sum("could not send" in r.message for r in caplog.records) == 1
        done, _ = lifecycle.resolve(inc, 1030.0, "quiet")
        n.sync([done], set(), 1031.0)
        assert a.batches[-1][0]["endsAt"].startswith("1970-01-01T00:17:10"), "ends when the incident resolved"
        n.sync([done], set(), 1040.0)
        assert len(a.batches) == 3, "a resolved incident is sent once"
    finally:
        n.close()
        a.close()
        hook.close()
