"""The OpenAPI schema tells the truth: Schemathesis (bounded examples) finds no server error and no response
that the schema does not declare; /metrics is Prometheus text; request models refuse what handlers misread."""
from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from tests.incidentd.keyring import bearer

# Per operation: bounded so that CI stays fast; a longer run sets INCIDENTD_SCHEMATHESIS_EXAMPLES.
EXAMPLES = int(os.environ.get("INCIDENTD_SCHEMATHESIS_EXAMPLES", "20"))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    db = tmp_path_factory.mktemp("openapi") / "db.sqlite"
    rt = Runtime(Settings(database=db, security={"rate_limit_per_second": 1e6, "rate_limit_burst": 10**6,
                                                 "webhook_rate_per_second": 1e6, "webhook_burst": 10**6}))
    app = create_app(rt.settings, rt, start=False)
    headers = bearer(rt.store, "schemathesis")
    yield app, headers, rt
    rt.stop()


def test_schema_conformance(service):
    """Every operation, EXAMPLES generated cases each (valid and invalid), all of Schemathesis' checks: no 5xx,
    every status code and content type declared, bodies match their schemas, invalid input refused."""
    app, headers, _ = service
    api = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    failures: dict[str, str] = {}
    operations = 0
    for result in api.get_all_operations():
        op = result.ok()
        operations += 1

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def run(case) -> None:
            case.call_and_validate(headers=headers)

        try:
            run()
        except Exception as e:   # collect every operation's failure, then report them together
            failures[op.label] = str(e)[:2000]
    assert operations == 18
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_metrics_is_declared_as_prometheus_text(service):
    app, headers, _ = service
    doc = app.openapi()
    ok = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(ok) == ["text/plain"]
    with TestClient(app) as c:
        r = c.get("/metrics", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE incidentd_detection_cycles_total counter" in r.text


def test_every_protected_operation_declares_401_403_and_the_bearer_scheme(service):
    doc = service[0].openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path == "/healthz":
                continue
            assert "401" in op["responses"], (method, path)
            if path != "/metrics":
                assert "403" in op["responses"] and op.get("security"), (method, path)
            if method in ("post", "delete"):
                assert {"413", "422"} <= set(op["responses"]), (method, path)


def test_request_models_refuse_what_handlers_would_misread(service):
    app, headers, rt = service
    with TestClient(app) as c:
        r = c.post("/events", json={"model": "m", "kind": "deploy", "at": False}, headers=headers)
        assert r.status_code == 422 and r.json()["fields"][0].startswith("at")
        alert = {"status": "resolved", "labels": {}, "startsAt": "2024-05-01T12:00:00Z", "endsAt": 0,
                 "fingerprint": "f"}
        r = c.post("/webhooks/alertmanager", headers=headers,
                   json={"version": "4", "groupKey": "g", "status": "resolved", "receiver": "r", "alerts": [alert]})
        assert r.status_code == 422 and r.json()["fields"][0].startswith("alerts.0.endsAt")
        r = c.post("/webhooks/alertmanager", headers=headers,
                   json={"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "alerts": [],
                         "truncatedAlerts": True})
        assert r.status_code == 422 and r.json()["fields"][0].startswith("truncatedAlerts")
