"""The transparent proxy against a real upstream (a small ASGI app under uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from collector.adapters.payloads import decode
from collector.capture import CaptureBuffer
from collector.proxy import Proxy


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, app: Callable[..., Any]) -> None:
        self.port = _port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive()
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


release = threading.Event()


async def infer(request: Request) -> JSONResponse:
    body = await request.json()
    rows = body["inputs"][0]["shape"][0]
    return JSONResponse(
        {"model_name": request.path_params["m"], "model_version": "3", "id": body.get("id"),
         "outputs": [{"name": "p", "shape": [rows, 2], "datatype": "FP32", "data": [0.1, 0.9] * rows}]},
        headers={"x-seen-request-id": request.headers.get("x-request-id", ""), "x-custom": "kept"},
    )


async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    if any(len(i) != 2 for i in body["instances"]):
        return JSONResponse({"error": "bad"}, status_code=400)
    return JSONResponse({"predictions": [int(i[0] > 0) for i in body["instances"]]})


async def stream(request: Request) -> StreamingResponse:
    async def gen() -> Iterator[bytes]:  # type: ignore[misc]
        for i in range(3):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0)
    return StreamingResponse(gen(), media_type="text/event-stream")


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.method} {request.url.path}?{request.url.query} {await request.body()!r}")


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
    return PlainTextResponse("late")


UPSTREAM = Starlette(
    routes=[
        Route("/v2/models/{m}/infer", infer, methods=["POST"]),
        Route("/v2/models/{m}/versions/{v}/infer", infer, methods=["POST"]),
        Route("/v1/models/{m}:predict", predict, methods=["POST"]),
        Route("/v1/chat/completions", stream, methods=["POST"]),
        Route("/slow", slow, methods=["GET"]),
        Route("/{rest:path}", echo, methods=["GET", "POST", "PUT"]),
    ]
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Served]:
    s = Served(UPSTREAM)
    yield s
    release.set()
    s.stop()


@pytest.fixture()
def proxied(upstream: Served) -> Iterator[tuple[httpx.Client, CaptureBuffer]]:
    buf = CaptureBuffer(max_items=100)
    p = Served(Proxy(upstream.url, buf))
    with httpx.Client(base_url=p.url, timeout=30) as c:
        yield c, buf
    p.stop()


def v2(rows: list[list[float]], **extra: object) -> dict:
    flat = [v for r in rows for v in r]
    return {"inputs": [{"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": flat}], **extra}


def test_oip_v2_is_forwarded_unchanged_and_recorded_with_the_callers_request_id(proxied):
    c, buf = proxied
    r = c.post("/v2/models/m/infer", json=v2([[1, 2, 3]]), headers={"X-Request-Id": "abc"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc"
    assert r.headers["x-custom"] == "kept" and r.headers["x-seen-request-id"] == "abc"
    (ex,) = buf.drain()
    d = decode(ex)
    assert ex.request_id == "abc" and d.model == "m" and d.version == "3"
    assert d.records[0].inputs.tolist() == [1, 2, 3] and d.records[0].prediction == 1


def test_request_id_from_ce_id_then_the_oip_body_then_assigned(proxied):
    c, buf = proxied
    assert c.post("/v2/models/m/infer", json=v2([[1.0]]), headers={"Ce-Id": "ce-7"}).headers["x-request-id"] == "ce-7"
    r = c.post("/v2/models/m/infer", json=v2([[1.0]], id="body-9"))
    assert r.headers["x-request-id"] == "body-9" and r.headers["x-seen-request-id"] == "body-9"
    assigned = c.post("/v2/models/m/versions/2/infer", json=v2([[1.0]])).headers["x-request-id"]
    assert len(assigned) == 32
    ids = [e.request_id for e in buf.drain()]
    assert ids == ["ce-7", "body-9", assigned]


def test_batch_rows_are_flattened_row_major_with_one_id_per_row(proxied):
    c, buf = proxied
    c.post("/v2/models/m/infer", json=v2([[1, 2], [3, 4], [5, 6]]), headers={"X-Request-Id": "b"})
    d = decode(buf.drain()[0])
    assert [r.request_id for r in d.records] == ["b/0", "b/1", "b/2"]
    assert [r.inputs.tolist() for r in d.records] == [[1, 2], [3, 4], [5, 6]]


def test_kserve_v1_instances_and_errors(proxied):
    c, buf = proxied
    ok = c.post("/v1/models/m:predict", json={"instances": [[1, 0], [-1, 0]]})
    bad = c.post("/v1/models/m:predict", json={"instances": [[1, 2, 3]]})
    assert ok.json() == {"predictions": [1, 0]} and bad.status_code == 400
    good, failed = (decode(e) for e in buf.drain())
    assert [r.prediction for r in good.records] == [1, 0]
    assert failed.records[0].error == "http_400" and failed.records[0].inputs.size == 0


def test_server_sent_events_and_unknown_paths_pass_through_untouched(proxied):
    c, buf = proxied
    with c.stream("POST", "/v1/chat/completions", json={"stream": True}) as r:
        chunks = b"".join(r.iter_raw())
    assert chunks == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    r = c.put("/some/where?q=1", content=b"raw")
    assert r.text == "PUT /some/where?q=1 b'raw'" and "x-request-id" not in r.headers
    assert buf.drain() == []


def test_an_unreachable_upstream_is_a_502_at_once():
    buf = CaptureBuffer()
    p = Served(Proxy(f"http://127.0.0.1:{_port()}", buf))
    try:
        r = httpx.post(p.url + "/v2/models/m/infer", json=v2([[1.0]]), headers={"X-Request-Id": "z"}, timeout=10)
    finally:
        p.stop()
    assert r.status_code == 502 and r.headers["x-request-id"] == "z"


def test_a_slow_upstream_holds_the_caller_no_longer_than_itself(proxied):
    c, _ = proxied
    release.clear()
    out: dict[str, str] = {}
    t = threading.Thread(target=lambda: out.update(text=c.get("/slow").text))
    t.start()
    t.join(0.5)
    assert t.is_alive()  # the upstream has not answered: the caller is still waiting, nothing else
    release.set()  # the moment the upstream answers, so does the proxy
    t.join(10)
    assert out["text"] == "late"


def test_payload_flood_is_bounded_and_counted(proxied):
    c, buf = proxied
    for i in range(130):
        c.post("/v2/models/m/infer", json=v2([[float(i)]]))
    assert len(buf) == 100 and buf.dropped_total == 30 and buf.peak_bytes > 0


def test_capture_buffer_bound_by_bytes():
    from collector.adapters.payloads import Exchange

    buf = CaptureBuffer(max_items=1000, max_bytes=2000)
    ex = Exchange("a", "/v2/models/m/infer", b"x" * 600, b"{}", 200, 0.001, 0.0)
    assert [buf.put(ex) for _ in range(3)] == [True, True, False]
    assert buf.dropped_total == 1 and buf.bytes <= 2000
    assert len(buf.drain()) == 2 and buf.bytes == 0
