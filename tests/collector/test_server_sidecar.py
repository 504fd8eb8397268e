"""ServerSidecar's cycle against a small real upstream (KServe-style /metrics, OIP v2 /infer) on loopback.

The real third-party servers are in tests/integration/test_model_servers.py; this covers the cycle's
own rules where no model server is installed: auto-detection, counts from the proxy when the map has no
error counter, the missing-reference gauge, versions taken from the payloads, unmatched labels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CollectorRegistry as Registry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.adapters import builtin_maps
from collector.adapters.spec import MapError
from collector.gpu import NoGPUSource
from collector.proxy import Proxy
from collector.server_sidecar import AUTO, ServerOptions, ServerSidecar, default_metrics_url
from collector.sidecar import SidecarConfig
from tests.collector.test_proxy import Served


def make_upstream() -> Starlette:
    reg = Registry()
    hist = Histogram("request_predict_seconds", "predict latency", ["model_name"], registry=reg)

    async def infer(request: Request) -> JSONResponse:
        t = time.perf_counter()
        body = await request.json()
        x = np.asarray(body["inputs"][0]["data"], dtype=float)
        hist.labels("m").observe(time.perf_counter() - t)
        if not np.all(np.abs(x) < 1e6):
            return JSONResponse({"error": "out of range"}, status_code=500)
        return JSONResponse({"model_name": "m", "model_version": "7",
                             "outputs": [{"name": "y", "shape": [1], "datatype": "INT64", "data": [int(x[0] > 0)]}]})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(reg), media_type="text/plain")

    return Starlette(routes=[Route("/v2/models/m/infer", infer, methods=["POST"]), Route("/metrics", metrics)])


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture()
def setup() -> Iterator[tuple[ServerSidecar, httpx.Client, Clock]]:
    up = Served(make_upstream())
    clock = Clock()
    sc = ServerSidecar(
        up.url, interval=1.0, gpu_source=NoGPUSource(), registry=CollectorRegistry(), clock=clock,
        server=ServerOptions(kind=AUTO, maps=builtin_maps(), metrics_url=up.url + "/metrics",
                             label_max_age_seconds=60),
        config=SidecarConfig(drift_min_rows=10),
    )
    proxy = Served(Proxy(up.url, sc.capture, clock=clock))
    with httpx.Client(base_url=proxy.url) as c:
        yield sc, c, clock
    proxy.stop()
    sc.close()
    up.stop()


def v2(x: float) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [x, 0.0]}]}


def metric(sc: ServerSidecar, name: str, **labels: str) -> float | None:
    return sc.registry.get_sample_value(name, labels or None)


def test_the_cycle_detects_the_kind_counts_through_the_proxy_and_reports_the_missing_reference(setup):
    sc, c, clock = setup
    sc.run_once()  # before any request: the model has no series yet
    for i in range(5):
        assert c.post("/v2/models/m/infer", json=v2(float(i))).status_code == 200
    assert c.post("/v2/models/m/infer", json=v2(1e9)).status_code == 500
    snap = sc.run_once()
    assert sc.kind == "kserve"
    assert (snap.model, snap.version) == ("m", "7")  # version from the OIP answers; metrics have none
    mv = {"model": "m", "version": "7"}
    # KServe's map has no error counter: requests and errors both come from what the proxy saw.
    assert metric(sc, "model_requests_total", **mv) == 6
    assert metric(sc, "model_request_errors_total", **mv) == 1
    assert metric(sc, "model_drift_reference_missing", **mv) == 1  # no --reference: said, not silent
    assert metric(sc, "incidentd_sidecar_server_info", kind="kserve") == 1
    assert snap.window.latency_quantiles  # from the server's request_predict_seconds histogram


def test_labels_join_by_the_proxys_request_id_and_unknown_ones_expire_as_unmatched(setup):
    sc, c, clock = setup
    ids = [c.post("/v2/models/m/infer", json=v2(x)).headers["x-request-id"] for x in (1.0, -1.0, 2.0)]
    from collector.feedback import parse_feedback, to_labels

    sc.inbox.post(to_labels(parse_feedback({"items": [
        {"request_id": ids[0], "label": 1}, {"request_id": ids[1], "label": 1},
        {"request_id": ids[2], "label": 1}, {"request_id": "nobody", "label": 0}]}), clock()))
    sc.run_once()
    mv = {"model": "m", "version": "7"}
    assert metric(sc, "model_predictions_labeled_total", **mv) == 3
    assert metric(sc, "model_accuracy_ratio", **mv) == pytest.approx(2 / 3)
    assert metric(sc, "model_feedback_pending_labels", **mv) == 1
    clock.offset += 61
    sc.run_once()
    assert metric(sc, "model_feedback_unmatched_total", **mv) == 1


def test_unknown_kind_is_an_error_naming_the_known_ones():
    with pytest.raises(MapError, match="no such map"):
        ServerSidecar("http://127.0.0.1:1", server=ServerOptions(kind="nope", maps=builtin_maps()),
                      registry=CollectorRegistry())


def test_default_metrics_url_uses_the_maps_port():
    maps = builtin_maps()
    assert default_metrics_url("http://10.0.0.5:8080", maps["mlserver"]) == "http://10.0.0.5:8082/metrics"
    assert default_metrics_url("http://h:8000/", maps["triton"]) == "http://h:8002/metrics"
    assert default_metrics_url("http://h:3000", maps["bentoml"]) == "http://h:3000/metrics"


def test_the_version_watched_is_the_one_serving_now_not_the_one_with_most_requests_ever():
    """TorchServe and Triton keep an old version registered after a new default: its cumulative counter
    stays the larger for a long time, but the traffic goes to the new one."""
    totals = {"1.0": 1000.0, "2.0": 0.0}

    async def metrics(request: Request) -> Response:
        lines = ["# TYPE ts_inference_requests_total counter"] + [
            f'ts_inference_requests_total{{model_name="m",model_version="{v}"}} {n}' for v, n in totals.items()]
        return Response("\n".join(lines) + "\n", media_type="text/plain")

    up = Served(Starlette(routes=[Route("/metrics", metrics)]))
    sc = ServerSidecar(up.url, interval=1.0, gpu_source=NoGPUSource(), registry=CollectorRegistry(),
                       server=ServerOptions(kind="torchserve", maps=builtin_maps(), metrics_url=up.url + "/metrics"))
    try:
        assert sc.run_once().version == "1.0"
        totals["1.0"] += 20                      # still the default
        assert sc.run_once().version == "1.0"
        totals["2.0"] += 20                      # set-default 2.0: the traffic moved
        assert sc.run_once().version == "2.0"
        assert sc.run_once().version == "2.0"    # an idle scrape keeps the version it watched
        totals["1.0"] += 20                      # rolled back
        assert sc.run_once().version == "1.0"
    finally:
        sc.close()
        up.stop()
