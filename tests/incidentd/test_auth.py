"""Identities and scopes: the authorization matrix over every route, API keys (CLI, hashing, revocation),
Alertmanager basic auth, the identity in the audit trail, rate limits, and the start-up bind rules."""
from __future__ import annotations

import base64
import json
import sqlite3

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from incidentd.api.app import create_app
from incidentd.api.deps import PUBLIC, api_routes, scope_of
from incidentd.auth.bind import check_bind
from incidentd.auth.keys import create_key, list_keys, revoke_key
from incidentd.auth.ratelimit import RateLimiter
from incidentd.auth.scopes import Scope, parse_scopes
from incidentd.cli import build_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from tests.incidentd.keyring import bearer

R, P, A, ING, ADM = Scope.READ, Scope.RESPOND, Scope.APPROVE, Scope.INGEST, Scope.ADMIN
# The policy, written down once. A route the app serves but this table lacks fails the matrix test, so
# a new route cannot ship without a decision about who may call it.
EXPECTED: dict[tuple[str, str], Scope | str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,       # any credential, or none with security.metrics_public
    ("GET", "/openapi.json"): PUBLIC,  # any credential, or none with security.docs_public
    ("GET", "/incidents"): R,
    ("GET", "/incidents/{incident_id}"): R,
    ("GET", "/incidents/{incident_id}/plot.png"): R,
    ("POST", "/incidents/{incident_id}/ack"): P,
    ("POST", "/incidents/{incident_id}/resolve"): P,
    ("POST", "/incidents/{incident_id}/comments"): P,
    ("POST", "/incidents/{incident_id}/actions/{action_id}/approve"): A,
    ("POST", "/incidents/{incident_id}/actions/{action_id}/deny"): A,
    ("POST", "/webhooks/alertmanager"): ING,
    ("POST", "/webhooks/grafana"): ING,
    ("POST", "/events"): ING,
    ("GET", "/models"): R,
    ("GET", "/models/{model}/signals"): R,
    ("GET", "/keys"): ADM,
    ("POST", "/keys"): ADM,
    ("DELETE", "/keys/{name}"): ADM,
}


@pytest.fixture()
def runtime(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", webhook_token="legacy-token"))
    yield rt
    rt.stop()


@pytest.fixture()
def app(runtime):
    return create_app(runtime.settings, runtime, start=False)


def _call(c: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    url = path.replace("{incident_id}", "inc-x").replace("{action_id}", "act-x").replace("{model}", "m") \
        .replace("{name}", "nobody")
    body: dict[str, str] | None = {} if method == "POST" else None
    return c.request(method, url, headers=headers, json=body).status_code


def test_every_route_declares_its_policy_and_matches_the_table(app):
    served = {(m, r.path): scope_of(r) for r in api_routes(app.routes) for m in r.methods}
    assert None not in served.values(), [k for k, v in served.items() if v is None]
    assert served == EXPECTED


def test_authorization_matrix(app, runtime):
    keys = {s: bearer(runtime.store, f"only-{s.value}", s) for s in Scope}
    with TestClient(app) as c:
        for (method, path), needed in EXPECTED.items():
            anonymous = _call(c, method, path, {})
            if needed == PUBLIC:
                assert anonymous == (200 if path == "/healthz" else 401), (method, path)
                for s in Scope:
                    assert _call(c, method, path, keys[s]) == 200, (method, path, s)
                continue
            assert anonymous == 401, (method, path)
            for s, headers in keys.items():
                got = _call(c, method, path, headers)
                if s is needed:
                    assert got not in (401, 403), (method, path, s, got)   # 404/422 for the made-up ids
                else:
                    assert got == 403, (method, path, s, got)
            assert _call(c, method, path, {"Authorization": "Bearer ikd_nope_nope"}) == 401


def test_schema_and_docs_need_a_credential_unless_public(app, runtime, tmp_path):
    with TestClient(app) as c:
        assert c.get("/openapi.json").status_code == 401
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json", headers=bearer(runtime.store, "viewer", R)).json()["info"]["title"] == \
            "incidentd"
    rt = Runtime(Settings(database=tmp_path / "open.sqlite", security={"docs_public": True}))
    try:
        with TestClient(create_app(rt.settings, rt, start=False)) as c:
            assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
    finally:
        rt.stop()


def test_metrics_public_when_configured(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", security={"metrics_public": True}))
    try:
        with TestClient(create_app(rt.settings, rt, start=False)) as c:
            r = c.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            assert c.get("/incidents").status_code == 401
    finally:
        rt.stop()


def test_keys_cli_create_list_revoke(tmp_path):
    cfg = tmp_path / "incidentd.yaml"
    db = tmp_path / "svc.db"
    cfg.write_text(f"database: {db}\n")
    cli = CliRunner()
    out = cli.invoke(build_app(), ["keys", "create", "--config", str(cfg), "--name", "alice",
                                   "--scopes", "read,respond", "--json"])
    assert out.exit_code == 0, out.output
    issued = json.loads(out.stdout)
    assert set(issued) == {"name", "key", "scopes"} and issued["scopes"] == ["read", "respond"]
    # Stored hashed: the secret is nowhere in the database file.
    # The id is hex; the url-safe secret may itself contain "_".
    secret = issued["key"].split("_", 2)[2]
    assert len(secret) >= 40
    assert secret.encode() not in db.read_bytes()
    with sqlite3.connect(db) as con:
        (digest,) = con.execute("SELECT hash FROM api_keys WHERE name='alice'").fetchone()
    assert len(digest) == 32 and secret.encode() not in digest

    listed = cli.invoke(build_app(), ["keys", "list", "--config", str(cfg), "--json"])
    assert listed.exit_code == 0 and issued["key"] not in listed.stdout
    assert [k["name"] for k in json.loads(listed.stdout)] == ["alice"]
    again = cli.invoke(build_app(), ["keys", "create", "--config", str(cfg), "--name", "alice", "--scopes", "read"])
    assert again.exit_code == 2 and "alice" in again.output
    bad = cli.invoke(build_app(), ["keys", "create", "--config", str(cfg), "--name", "x", "--scopes", "root"])
    assert bad.exit_code == 2 and "'root'" in bad.output

    rt = Runtime(Settings.load(cfg))
    try:
        with TestClient(create_app(rt.settings, rt, start=False)) as c:
            auth = {"Authorization": f"Bearer {issued['key']}"}
            assert c.get("/incidents", headers=auth).status_code == 200
            assert c.post("/events", json={"model": "m", "kind": "deploy"}, headers=auth).status_code == 403
            revoked = cli.invoke(build_app(), ["keys", "revoke", "alice", "--config", str(cfg)])
            assert revoked.exit_code == 0
            assert c.get("/incidents", headers=auth).status_code == 401   # at once, cached or not
    finally:
        rt.stop()


def test_key_with_right_id_and_wrong_secret_is_refused(runtime, app):
    issued = create_key(runtime.store, "bob", frozenset({R}))
    forged = issued.key[: -4] + ("AAAA" if not issued.key.endswith("AAAA") else "BBBB")
    with TestClient(app) as c:
        assert c.get("/incidents", headers={"Authorization": f"Bearer {issued.key}"}).status_code == 200
        assert c.get("/incidents", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        assert c.get("/incidents", headers={"Authorization": f"Token {issued.key}"}).status_code == 401


def test_alertmanager_basic_auth_and_legacy_token(runtime, app):
    key = create_key(runtime.store, "alertmanager", frozenset({ING})).key
    basic = base64.b64encode(f"alertmanager:{key}".encode()).decode()
    payload = {"version": "4", "groupKey": "g", "status": "firing", "receiver": "incidentd", "alerts": []}
    with TestClient(app) as c:
        assert c.post("/webhooks/alertmanager", json=payload,
                      headers={"Authorization": f"Basic {basic}"}).status_code == 200
        legacy = base64.b64encode(b"am:legacy-token").decode()
        assert c.post("/webhooks/alertmanager", json=payload,
                      headers={"Authorization": f"Basic {legacy}"}).status_code == 200
        wrong = base64.b64encode(b"am:nope").decode()
        assert c.post("/webhooks/alertmanager", json=payload,
                      headers={"Authorization": f"Basic {wrong}"}).status_code == 401


def test_change_event_records_who_sent_it(runtime, app):
    with TestClient(app) as c:
        eid = c.post("/events", json={"model": "digits", "kind": "deploy", "description": "by=mallory"},
                     headers=bearer(runtime.store, "ci-pipeline", ING)).json()["id"]
    (ev,) = runtime.store.evidence([eid])
    assert ev.attributes["by"] == "key:ci-pipeline" and ev.attributes["authenticated"] is True


def test_comment_lands_on_the_timeline_with_the_identity(runtime, app):
    from diagnosis.lifecycle import open_incident
    from diagnosis.types import FaultDomain, Hypothesis

    inc, entries = open_incident("digits", [Hypothesis(FaultDomain.MODEL, "model.x", 0.9, "notify", "x")], [],
                                 1000.0, [])
    runtime.store.save_incident(inc, entries)
    with TestClient(app) as c:
        r = c.post(f"/incidents/{inc.id}/comments", json={"note": "rolling back by hand"},
                   headers=bearer(runtime.store, "carol", P))
        assert r.status_code == 200
    last = runtime.store.timeline(inc.id)[-1]
    assert last.kind == "comment" and last.data["actor"] == "key:carol" and "rolling back" in last.message


def test_mutating_requests_are_rate_limited_per_identity_with_retry_after(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite",
                          security={"rate_limit_per_second": 0.01, "rate_limit_burst": 3,
                                    "webhook_rate_per_second": 0.01, "webhook_burst": 2}))
    try:
        app = create_app(rt.settings, rt, start=False)
        alice, bob = bearer(rt.store, "alice", ING), bearer(rt.store, "bob", ING)
        ev = {"model": "m", "kind": "deploy"}
        with TestClient(app) as c:
            codes = [c.post("/events", json=ev, headers=alice).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = c.post("/events", json=ev, headers=alice)
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert c.post("/events", json=ev, headers=bob).status_code == 200   # per identity
            assert c.get("/healthz").status_code == 200
            # Alertmanager retries only 5xx: load is answered 503, never 4xx.
            am = {"version": "4", "groupKey": "g", "status": "firing", "receiver": "r", "alerts": []}
            codes = [c.post("/webhooks/alertmanager", json=am, headers=alice).status_code for _ in range(3)]
            assert codes == [200, 200, 503]
    finally:
        rt.stop()


def test_rate_limiter_refills_with_the_clock():
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=1, clock=lambda: now[0])
    assert rl.take("a") == 0.0
    assert rl.take("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert rl.take("a") == 0.0


def test_scopes_parse_and_name_unknown_ones():
    assert parse_scopes("read, respond") == {R, P}
    with pytest.raises(ValueError, match="unknown scope 'write'"):
        parse_scopes("read,write")


def test_revoke_and_list(runtime):
    create_key(runtime.store, "dave", frozenset({R}))
    assert revoke_key(runtime.store, "dave") and not revoke_key(runtime.store, "dave")
    assert list_keys(runtime.store) == [] and len(list_keys(runtime.store, include_revoked=True)) == 1


def test_bind_rules():
    assert check_bind("127.0.0.1", credentials=False, insecure=False).allowed
    assert "loopback" in check_bind("127.0.0.1", credentials=False, insecure=False).notes[0]
    assert check_bind("::1", credentials=False, insecure=False).allowed
    refused = check_bind("0.0.0.0", credentials=False, insecure=False)
    assert not refused.allowed and "--insecure" in refused.error
    forced = check_bind("0.0.0.0", credentials=False, insecure=True)
    assert forced.allowed and any("--insecure" in w for w in forced.warnings)
    assert check_bind("0.0.0.0", credentials=True, insecure=False) == check_bind("10.0.0.1", True, False)
    # --insecure is warned about at every start, even with credentials.
    assert check_bind("0.0.0.0", credentials=True, insecure=True).warnings


def test_serve_refuses_a_public_bind_without_credentials(tmp_path):
    out = CliRunner().invoke(build_app(), ["serve", "--host", "0.0.0.0", "--database", str(tmp_path / "x.db")])
    assert out.exit_code == 2 and "refusing to listen on 0.0.0.0" in out.output


def test_anonymous_scopes_are_opt_in_and_marked_unauthenticated(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", security={"anonymous_scopes": ["ingest"]}))
    try:
        with TestClient(create_app(rt.settings, rt, start=False)) as c:
            eid = c.post("/events", json={"model": "digits", "kind": "deploy"}).json()["id"]
            assert c.get("/incidents").status_code == 401
        (ev,) = rt.store.evidence([eid])
        assert ev.attributes["by"] == "anonymous" and ev.attributes["authenticated"] is False
    finally:
        rt.stop()


def test_model_server_admin_bind_rules():
    from incidentd.model_server.auth import check_admin_bind

    assert check_admin_bind("127.0.0.1", None, insecure=False) is None
    assert "--admin-token-file" in check_admin_bind("0.0.0.0", None, insecure=False)
    assert check_admin_bind("0.0.0.0", "t", insecure=False) is None
    assert check_admin_bind("0.0.0.0", None, insecure=True) is None


def test_keys_over_the_api_need_admin_and_show_the_key_once(runtime, app):
    admin = bearer(runtime.store, "root", ADM)
    with TestClient(app) as c:
        r = c.post("/keys", json={"name": "grafana", "scopes": ["read"]}, headers=admin)
        assert r.status_code == 201 and r.json()["key"].startswith("ikd_") and r.json()["created_by"] == "key:root"
        key = r.json()["key"]
        listed = c.get("/keys", headers=admin)
        assert key not in listed.text and "grafana" in listed.text
        assert c.post("/keys", json={"name": "grafana", "scopes": ["read"]}, headers=admin).status_code == 409
        assert c.post("/keys", json={"name": "x", "scopes": ["root"]}, headers=admin).status_code == 422
        assert c.get("/incidents", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.delete("/keys/grafana", headers=admin).json()["by"] == "key:root"
        assert c.get("/incidents", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_the_demo_issues_its_own_key_before_the_service_starts(tmp_path, runtime):
    from incidentd.demo import Demo
    from incidentd.store import Store

    demo = Demo(workdir=tmp_path / "demo", plots=False)
    db = str(tmp_path / "demo" / "incidentd.db")
    first, second = demo._issue_key(db), demo._issue_key(db)   # a reused workdir replaces its key
    demo.http.close()
    ring = Store(db)
    try:
        from incidentd.auth.keys import KeyRing

        assert KeyRing(ring).verify(first) is None
        info = KeyRing(ring).verify(second)
        assert info is not None and info.scopes == {R, P, A}
    finally:
        ring.close()
    assert len(demo.admin_token) >= 32


def test_keys_cli_writes_to_the_services_postgresql_database(tmp_path, pg_url):
    """With ``database_url`` in the settings the keys go where the service reads them, not to a SQLite file."""
    from incidentd.store import Store

    Store(pg_url, migrate_schema=True).close()          # `incidentd db upgrade`
    cfg = tmp_path / "incidentd.yaml"
    cfg.write_text(f"database: {tmp_path / 'unused.db'}\ndatabase_url: {pg_url}\n")
    out = CliRunner().invoke(build_app(), ["keys", "create", "--config", str(cfg), "--name", "ops",
                                           "--scopes", "read", "--json"])
    assert out.exit_code == 0, out.output
    store = Store(pg_url)
    try:
        assert [k.name for k in list_keys(store)] == ["ops"]
    finally:
        store.close()
    assert not (tmp_path / "unused.db").exists()
    # --database takes the URL too
    out = CliRunner().invoke(build_app(), ["keys", "list", "--database", pg_url, "--json"])
    assert out.exit_code == 0 and [k["name"] for k in json.loads(out.stdout)] == ["ops"]
