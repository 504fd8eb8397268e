"""OIDC bearer JWTs: verified against a JWKS served by a real local HTTP server, claims mapped to scopes."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.errors import ConfigError
from incidentd.runtime import Runtime

ISSUER, AUDIENCE = "https://idp.example.test/", "incidentd"


def _rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def idp():
    """A JWKS endpoint on 127.0.0.1 holding one public key (kid k1); yields (url, private key)."""
    key = _rsa()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", key
    server.shutdown()


def _token(key, kid="k1", **claims):
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.test", "iat": now, "exp": now + 300}
    return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture()
def client(idp, tmp_path):
    url, _ = idp
    oidc = {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE, "scopes_claim": "groups",
            "scope_map": {"ml-oncall": ["read", "respond"], "ml-leads": ["approve"]}}
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", security={"oidc": oidc}))
    with TestClient(create_app(rt.settings, rt, start=False)) as c:
        yield c, rt
    rt.stop()


def test_valid_token_maps_claims_to_scopes_and_names_the_identity(client, idp):
    c, rt = client
    _, key = idp
    auth = {"Authorization": f"Bearer {_token(key, groups=['ml-oncall', 'other'])}"}
    assert c.get("/incidents", headers=auth).status_code == 200
    assert c.post("/incidents/inc-x/actions/act-x/approve", headers=auth).status_code == 403
    assert c.post("/events", json={"model": "m", "kind": "deploy"}, headers=auth).status_code == 403
    from diagnosis.lifecycle import open_incident
    from diagnosis.types import FaultDomain, Hypothesis

    inc, entries = open_incident("m", [Hypothesis(FaultDomain.MODEL, "model.x", 0.9, "notify", "x")], [], 1.0, [])
    rt.store.save_incident(inc, entries)
    assert c.post(f"/incidents/{inc.id}/ack", headers=auth).status_code == 200
    assert rt.store.timeline(inc.id)[-1].data["actor"] == "jwt:alice@example.test"


@pytest.mark.parametrize("claims,kid,why", [
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "k1", "expired"),
    ({"aud": "someone-else"}, "k1", "wrong audience"),
    ({"iss": "https://evil.example.test/"}, "k1", "wrong issuer"),
    ({}, "k2", "unknown key id"),
])
def test_invalid_tokens_are_401(client, idp, claims, kid, why):
    c, _ = client
    _, key = idp
    token = _token(key, kid=kid, groups=["ml-oncall"], **claims)
    assert c.get("/incidents", headers={"Authorization": f"Bearer {token}"}).status_code == 401, why


def test_token_signed_by_another_key_is_401(client):
    c, _ = client
    token = _token(_rsa(), groups=["ml-oncall"])   # same kid, not the IdP's key
    assert c.get("/incidents", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_shared_secret_algorithms_are_refused_at_start_up(idp, tmp_path):
    url, _ = idp
    with pytest.raises(ConfigError, match="HS256"):
        Settings.load(None, database=tmp_path / "x.db",
                      security={"oidc": {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE,
                                         "algorithms": ["HS256"]}})
