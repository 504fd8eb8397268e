"""Hostile input gets the right 4xx with bounded memory: huge bodies (read no further than the limit), deep
JSON, 100,000 alerts, invalid UTF-8, NaN and Infinity; and 4xx bodies never leak other models or paths.

Requests go straight to the ASGI app, with the body streamed in chunks by the test, so that tracemalloc
measures what the service allocates (not the test's copy of the body) and the test can count how much of the
body the service read.
"""
from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from tests.incidentd.keyring import bearer

MiB = 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture()
def service(tmp_path):
    rt = Runtime(Settings(database=tmp_path / "db.sqlite"))
    app = create_app(rt.settings, rt, start=False)
    auth = bearer(rt.store, "fuzzer")["Authorization"]
    yield app, auth, rt
    rt.stop()


class Result:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.consumed = 0       # request body bytes the app pulled from the stream
        self.peak = 0           # peak memory traced while the request ran

    def json(self) -> Any:
        return json.loads(self.body)


def call(app, method: str, path: str, chunks: Iterator[bytes], auth: str | None,
         content_type: str = "application/json", length: int | None = None) -> Result:
    res = Result()
    headers = [(b"content-type", content_type.encode())]
    if auth:
        headers.append((b"authorization", auth.encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8080)}
    it = iter(chunks)
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:
            await asyncio.sleep(3600)   # the client keeps the connection open
        chunk = next(it, None)
        if chunk is None:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        res.consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            res.status = msg["status"]
            res.headers = {k.decode(): v.decode() for k, v in msg.get("headers", [])}
        elif msg["type"] == "http.response.body":
            res.body += msg.get("body", b"")

    tracemalloc.start()
    try:
        asyncio.run(app(scope, receive, send))
        res.peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return res


def stream(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i:i + CHUNK]


def endless(total: int) -> Iterator[bytes]:
    """``total`` bytes of a JSON-looking body, made chunk by chunk (never held whole)."""
    block = b" " * CHUNK
    yield b'{"model": "m", "kind": "deploy", "description": "'
    for _ in range(total // CHUNK):
        yield block


def test_100_mb_body_is_413_and_read_no_further_than_the_limit(service):
    app, auth, _ = service
    r = call(app, "POST", "/events", endless(100 * MiB), auth)
    assert r.status == 413 and "larger than 1048576 bytes" in r.json()["error"]
    assert r.consumed <= MiB + 2 * CHUNK            # stopped at the limit, not at 100 MB
    assert r.peak < 8 * MiB


def test_declared_length_over_the_limit_is_413_before_reading(service):
    app, auth, _ = service
    r = call(app, "POST", "/webhooks/alertmanager", endless(100 * MiB), auth, length=100 * MiB)
    assert r.status == 413 and r.consumed == 0


def test_413_even_without_a_credential(service):
    app, _, _ = service
    r = call(app, "POST", "/events", endless(100 * MiB), None)
    assert r.status == 413 and r.consumed <= MiB + 2 * CHUNK


def test_json_nested_100000_deep_is_400(service):
    app, auth, _ = service
    body = b"[" * 100_000 + b"]" * 100_000
    r = call(app, "POST", "/webhooks/alertmanager", stream(body), auth)
    assert r.status == 400 and "not valid JSON" in r.json()["error"]
    assert r.peak < 8 * MiB


def test_100000_alerts_is_413_with_bounded_memory(service):
    app, auth, rt = service
    alert = {"status": "firing", "labels": {"alertname": "A", "model": "m"}, "annotations": {},
             "startsAt": "2024-05-01T12:00:00Z", "fingerprint": "f"}
    body = json.dumps({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
                       "alerts": [alert] * 100_000}).encode()
    assert len(body) > MiB
    r = call(app, "POST", "/webhooks/alertmanager", stream(body), auth)
    assert r.status == 413 and r.peak < 8 * MiB
    assert rt.store.models_with_open_alerts() == []


def test_more_alerts_than_the_bound_is_422_naming_the_field(service):
    app, auth, rt = service
    alerts = [{"status": "firing", "labels": {"alertname": "A", "model": "m"}, "startsAt": "2024-05-01T12:00:00Z",
               "fingerprint": f"f{i}"} for i in range(1001)]
    body = json.dumps({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
                       "alerts": alerts}).encode()
    assert len(body) < MiB
    r = call(app, "POST", "/webhooks/alertmanager", stream(body), auth)
    assert r.status == 422 and any(f.startswith("alerts:") for f in r.json()["fields"])
    assert rt.store.models_with_open_alerts() == []   # nothing of a refused payload is half-stored


def test_a_full_bounded_payload_is_accepted_in_one_transaction(service):
    app, auth, rt = service
    alerts = [{"status": "firing", "labels": {"alertname": "A", "model": "m"}, "startsAt": "2024-05-01T12:00:00Z",
               "fingerprint": f"f{i}"} for i in range(1000)]
    body = json.dumps({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
                       "alerts": alerts}).encode()
    r = call(app, "POST", "/webhooks/alertmanager", stream(body), auth)
    assert r.status == 200 and r.json()["accepted"] == 1000
    assert len(rt.store.open_alerts("m")) == 1000


@pytest.mark.parametrize("field,value", [
    ("labels", {f"k{i}": "v" for i in range(65)}),
    ("annotations", {"summary": "x" * 10_000}),
    ("fingerprint", "f" * 129),
])
def test_label_maps_and_strings_are_bounded(service, field, value):
    app, auth, _ = service
    alert = {"status": "firing", "labels": {"alertname": "A"}, "startsAt": "2024-05-01T12:00:00Z",
             "fingerprint": "f", field: value}
    body = json.dumps({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
                       "alerts": [alert]}).encode()
    r = call(app, "POST", "/webhooks/alertmanager", stream(body), auth)
    assert r.status == 422 and any(f.startswith(f"alerts.0.{field}") for f in r.json()["fields"])


def test_invalid_utf8_is_400(service):
    app, auth, _ = service
    r = call(app, "POST", "/events", stream(b'{"model": "m\xff\xfe", "kind": "deploy"}'), auth)
    assert r.status == 400 and r.peak < 8 * MiB


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e308", b"1e400", b"-1", b"false",
                                 b"true", b'"2024-05-01"'])
def test_non_finite_or_out_of_range_at_is_422_naming_the_field(service, raw):
    app, auth, rt = service
    r = call(app, "POST", "/events", stream(b'{"model": "m", "kind": "deploy", "at": ' + raw + b"}"), auth)
    assert r.status == 422, r.body
    assert [f.split(":")[0] for f in r.json()["fields"]] == ["at"]


@pytest.mark.parametrize("raw", [b"0", b"1714564800", b'"0001-01-01T00:00:00Z"'])
def test_alert_times_must_be_rfc3339_strings(service, raw):
    app, auth, _ = service
    alert = b'{"status": "resolved", "labels": {}, "startsAt": "2024-05-01T12:00:00Z", "fingerprint": "f", ' \
            b'"endsAt": ' + raw + b"}"
    body = b'{"version": "4", "groupKey": "g", "status": "resolved", "receiver": "r", "alerts": [' + alert + b"]}"
    r = call(app, "POST", "/webhooks/alertmanager", stream(body), auth)
    if raw.startswith(b'"'):
        assert r.status == 200
    else:
        assert r.status == 422 and [f.split(":")[0] for f in r.json()["fields"]] == ["alerts.0.endsAt"]


def test_4xx_never_lists_other_models(service):
    app, auth, rt = service
    rt.loop.last_readings["secret-model-a"] = {}
    rt.loop.last_readings["secret-model-b"] = {}
    r = call(app, "GET", "/models/nope/signals", iter(()), auth)
    assert r.status == 404 and b"secret-model" not in r.body


def test_4xx_never_shows_absolute_paths(service, tmp_path):
    app, auth, _ = service
    for method, path in [("GET", "/incidents/nope"), ("GET", "/incidents/nope/plot.png"),
                         ("POST", "/incidents/nope/actions/act-x/approve"), ("DELETE", "/keys/nope")]:
        r = call(app, method, path, stream(b"{}") if method == "POST" else iter(()), auth)
        assert r.status == 404 and str(tmp_path).encode() not in r.body and b"/db.sqlite" not in r.body
