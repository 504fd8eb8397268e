"""The sidecar against real third-party model servers: MLServer, KServe's ModelServer, TorchServe, Triton.

Each server is installed by scripts/servers/install_model_servers.sh (one venv per server), started once
per session on free loopback ports, serves the tiny numpy classifier of model_servers/tiny_model.py, and is
stopped at the end. Requests go through the sidecar's transparent proxy (and, for KServe, as the payload
logger's CloudEvents); labels are posted to the sidecar's /feedback. Per server the tests check:

* the sidecar's request and error counts equal what was sent;
* its latency quantiles fall inside the server's own histogram buckets (histogram servers), or its mean
  latency equals the server's own microsecond counters (counter-pair servers);
* accuracy follows the labels posted to /feedback, including a label posted before its request;
* a shifted feature is flagged as drift (through the proxy, and through CloudEvents for KServe).

With CI=true a server that cannot start fails its tests; elsewhere they skip with the reason.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.adapters import builtin_maps
from collector.app import create_app
from collector.gpu import NoGPUSource
from collector.proxy import Proxy
from collector.server_app import add_server_routes
from collector.server_sidecar import ServerOptions, ServerSidecar
from collector.sidecar import SidecarConfig
from tests.integration.model_servers import launch
from tests.integration.model_servers.tiny_model import predict as expected_class

KINDS = ["mlserver", "kserve", "torchserve", "triton"]
N_ROWS = 200  # per phase
N_BAD = 6
SHIFT = 2.5
LABEL_MAX_AGE = 300.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


class Clock:
    """Real time plus an offset the test can advance (to expire pending labels without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Background:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.port = launch.free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


_started: dict[str, launch.Served | str] = {}


def served(kind: str) -> launch.Served:
    """Start ``kind`` once per session (the failure, too, is remembered)."""
    if kind not in _started:
        try:
            _started[kind] = launch.STARTERS[kind](Path(tempfile.mkdtemp(prefix=f"incidentd-{kind}-")))
        except launch.Unavailable as exc:
            _started[kind] = f"{kind} could not start: {exc}"
    s = _started[kind]
    if isinstance(s, str):
        if in_ci():
            pytest.fail(s, pytrace=False)
        pytest.skip(s)
    return s


@pytest.fixture(scope="session", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    for s in _started.values():
        if isinstance(s, launch.Served):
            launch.stop(s)


def body(s: launch.Served, rows: np.ndarray) -> dict:
    if s.protocol == "v2":
        return {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]}
    return {"instances": rows.tolist()}


def feature_names(s: launch.Served) -> list[str]:
    # MLServer and Triton publish input metadata (tensor x of width 4); KServe's and TorchServe's do not.
    return [f"x_{i}" for i in range(4)] if s.protocol == "v2" else [f"f{i}" for i in range(4)]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def one(metrics: dict, name: str, **labels: str) -> float | None:
    vals = [v for (n, ls), v in metrics.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items())]
    return vals[0] if vals else None


def present(metrics: dict, name: str, **labels: str) -> float:
    """``one``'s value, which must be there."""
    value = one(metrics, name, **labels)
    assert value is not None, f"{name} {labels} missing"
    return value


@dataclass
class Result:
    served: launch.Served
    sent_ok: int = 0
    sent_bad: int = 0
    before: dict = field(default_factory=dict)  # server exposition before our requests
    before_sidecar: tuple[float, float] = (0.0, 0.0)  # the sidecar's request/error counts then
    server_after: dict = field(default_factory=dict)
    phase_a: dict = field(default_factory=dict)  # sidecar /metrics after the unshifted phase + labels
    phase_b: dict = field(default_factory=dict)  # ... after the shifted phase
    final: dict = field(default_factory=dict)  # ... after the pending label expired
    expected_accuracy: float = 0.0
    labeled: int = 0
    early_joined: bool = False


_results: dict[str, Result] = {}


def scenario(kind: str) -> Result:
    if kind in _results:
        return _results[kind]
    s = served(kind)
    refs = Path(tempfile.mkdtemp(prefix="incidentd-refs-"))
    rng = np.random.default_rng(7)
    (refs / s.model).mkdir()
    pd.DataFrame(rng.normal(size=(600, 4)), columns=feature_names(s)).to_csv(refs / s.model / "default.csv", index=False)
    clock = Clock()
    sc = ServerSidecar(
        s.base_url,
        interval=1.0,
        gpu_source=NoGPUSource(),
        registry=CollectorRegistry(),
        server=ServerOptions(kind=kind, maps=builtin_maps(), metrics_url=s.metrics_url, reference_dir=refs,
                             label_max_age_seconds=LABEL_MAX_AGE),
        config=SidecarConfig(model_name=s.model, window_rows=N_ROWS, window_seconds=3600, drift_min_rows=100,
                             accuracy_window=1000, timeout_seconds=10),
        clock=clock,
    )
    app = create_app(sc, manage_loop=False)
    add_server_routes(app, sc)
    proxy_srv, app_srv = Background(Proxy(s.base_url, sc.capture, clock=clock)), Background(app)
    r = Result(served=s)
    try:
        base = sc.run_once()  # the baseline reading, before any request
        r.before = scrape(s.metrics_url)
        totals = {p.name: p.value for p in base.passthrough}
        r.before_sidecar = (totals.get("model_requests_total", 0.0), totals.get("model_request_errors_total", 0.0))
        c = httpx.Client(base_url=proxy_srv.url, timeout=30)
        fb = httpx.Client(base_url=app_srv.url, timeout=30)
        path = s.infer_path()

        # A label that arrives before its request: kept pending, joined when the payload comes.
        early_id = f"early-{uuid.uuid4().hex[:8]}"
        early_row = rng.normal(size=(1, 4))
        assert fb.post("/feedback", json={"request_id": early_id, "label": int(expected_class(early_row)[0])}).status_code == 202

        ids, labels, correct = [], [], 0
        for i in range(N_ROWS):
            row = rng.normal(size=(1, 4))
            resp = c.post(path, json=body(s, row))
            assert resp.status_code == 200, resp.text
            ids.append(resp.headers["x-request-id"])
            truth = int(expected_class(row)[0])
            label = truth if i % 4 else (truth + 1) % 3  # every 4th label disagrees with the model
            labels.append(label)
            correct += label == truth
        resp = c.post(path, json=body(s, early_row), headers={"X-Request-Id": early_id})
        assert resp.status_code == 200 and resp.headers["x-request-id"] == early_id
        for _ in range(N_BAD):
            resp = c.post(path, json=body(s, np.array([[1e12, 0.0, 0.0, 0.0]])))
            assert resp.status_code >= 400
        r.sent_ok, r.sent_bad = N_ROWS + 1, N_BAD

        items = [{"request_id": i, "label": lab} for i, lab in zip(ids, labels)]
        items.append({"request_id": f"never-{uuid.uuid4().hex[:8]}", "label": 0})  # no such request
        assert fb.post("/feedback", json={"items": items}).status_code == 202
        sc.run_once()
        r.phase_a = scrape(app_srv.url + "/metrics")
        r.expected_accuracy = (correct + 1) / (N_ROWS + 1)  # + the early label, which agrees
        r.labeled = N_ROWS + 1

        for _ in range(N_ROWS):
            row = rng.normal(size=(1, 4))
            row[0, 0] += SHIFT
            assert c.post(path, json=body(s, row)).status_code == 200
        r.sent_ok += N_ROWS
        sc.run_once()
        r.phase_b = scrape(app_srv.url + "/metrics")
        r.server_after = scrape(s.metrics_url)

        clock.offset += LABEL_MAX_AGE + 1  # the "never" label has waited long enough
        sc.run_once()
        r.final = scrape(app_srv.url + "/metrics")
    finally:
        proxy_srv.stop()
        app_srv.stop()
        sc.close()
    _results[kind] = r
    return r


@pytest.fixture(params=KINDS)
def result(request: pytest.FixtureRequest) -> Result:
    return scenario(request.param)


def server_counts(r: Result) -> tuple[float, float]:
    """What the server itself counted during the scenario (after minus before)."""
    a, b = _counts(r.served.kind, r.server_after), _counts(r.served.kind, r.before)
    return a[0] - b[0], a[1] - b[1]


def _counts(kind: str, m: dict) -> tuple[float, float]:
    if kind == "mlserver":
        ok = one(m, "model_infer_request_success_total", model="tiny") or 0
        bad = one(m, "model_infer_request_failure_total", model="tiny") or 0
        return ok + bad, bad
    if kind == "triton":
        # prometheus_client's parser names the samples of Triton's counters with a _total suffix.
        ok = one(m, "nv_inference_request_success_total", model="tiny") or 0
        bad = sum(v for (n, ls), v in m.items() if n == "nv_inference_request_failure_total")
        return ok + bad, bad
    if kind == "torchserve":
        return one(m, "ts_inference_requests_total", model_name="tiny") or 0, one(m, "Requests5XX_total") or 0
    return one(m, "request_predict_seconds_count", model_name="tiny") or 0, math.nan  # kserve: no error series


def test_request_and_error_counts_equal_what_was_sent(result: Result):
    m, before = result.phase_b, result.before_sidecar
    sent = result.sent_ok + result.sent_bad
    assert present(m, "model_requests_total", model="tiny") - before[0] == sent
    assert present(m, "model_request_errors_total", model="tiny") - before[1] == result.sent_bad
    srv_requests, srv_errors = server_counts(result)
    assert srv_requests == sent  # the server saw the same: nothing was added or lost by the proxy
    if not math.isnan(srv_errors):
        assert srv_errors == result.sent_bad


def _server_histogram(r: Result) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the server's own latency histogram, summed over its series."""
    name, where = {
        "mlserver": ("rest_server_request_duration_seconds_bucket", {"path": "/v2/models/{model_name}/infer"}),
        "kserve": ("request_predict_seconds_bucket", {"model_name": "tiny"}),
    }[r.served.kind]
    buckets: dict[float, float] = {}
    for (n, ls), v in r.server_after.items():
        d = dict(ls)
        if n == name and all(d.get(k) == x for k, x in where.items()):
            le = float(d["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    return sorted(buckets.items())


def test_latency_quantiles_fall_within_the_servers_own_buckets(result: Result):
    m = result.phase_b
    kind = result.served.kind
    if kind in ("mlserver", "kserve"):
        buckets = _server_histogram(result)
        total = buckets[-1][1]
        for q in (0.5, 0.9, 0.99):
            value = one(m, "model_latency_seconds", model="tiny", quantile=f"{q:g}")
            assert value is not None
            rank = q * total
            lower = 0.0
            for upper, cum in buckets:
                if cum >= rank:
                    break
                lower = upper
            assert lower <= value <= upper, (q, value, lower, upper)
    else:
        # Triton and TorchServe count microseconds: the sidecar's mean is theirs over the same interval.
        name, count = {
            "triton": ("nv_inference_request_duration_us_total", "nv_inference_request_success_total"),
            "torchserve": ("ts_inference_latency_microseconds_total", "ts_inference_requests_total"),
        }[kind]
        label = {"model": "tiny"} if kind == "triton" else {"model_name": "tiny"}
        d_sum = present(result.server_after, name, **label) - (one(result.before, name, **label) or 0.0)
        d_n = present(result.server_after, count, **label) - (one(result.before, count, **label) or 0.0)
        mean = one(m, "model_latency_mean_seconds", model="tiny")
        assert mean == pytest.approx(d_sum / d_n * 1e-6, rel=1e-6)
        # The proxy's own timing gives quantiles; each is at least the server's fastest possible answer.
        assert present(m, "model_latency_seconds", model="tiny", quantile="0.5") > 0


def test_accuracy_follows_labels_posted_to_feedback(result: Result):
    m = result.phase_a
    assert one(m, "model_predictions_labeled_total", model="tiny") == result.labeled
    assert one(m, "model_accuracy_ratio", model="tiny") == pytest.approx(result.expected_accuracy)


def test_a_label_for_an_unknown_request_is_kept_then_counted_unmatched(result: Result):
    assert one(result.phase_a, "model_feedback_pending_labels", model="tiny") == 1
    assert one(result.final, "model_feedback_unmatched_total", model="tiny") == 1
    assert one(result.final, "model_feedback_pending_labels", model="tiny") == 0


def test_a_shifted_feature_through_the_proxy_is_flagged_as_drift(result: Result):
    assert one(result.phase_a, "model_drift_reference_missing", model="tiny") == 0
    assert one(result.phase_a, "model_input_drift_detected", model="tiny") == 0
    assert one(result.phase_b, "model_input_drift_detected", model="tiny") == 1
    drifted = [dict(ls)["feature"] for (n, ls), v in result.phase_b.items()
               if n == "model_feature_drift_statistic" and dict(ls).get("test") == "ks" and v > 0.3]
    assert drifted == [feature_names(result.served)[0]]


def test_kserve_payload_logger_cloudevents_shift_is_flagged_as_drift():
    """KServe's logger posts request and response as binary CloudEvents; here they are the real payloads."""
    s = served("kserve")
    refs = Path(tempfile.mkdtemp(prefix="incidentd-refs-"))
    rng = np.random.default_rng(11)
    (refs / "tiny").mkdir()
    pd.DataFrame(rng.normal(size=(600, 4)), columns=feature_names(s)).to_csv(refs / "tiny" / "default.csv", index=False)
    sc = ServerSidecar(
        s.base_url, interval=1.0, gpu_source=NoGPUSource(), registry=CollectorRegistry(),
        server=ServerOptions(kind="kserve", maps=builtin_maps(), metrics_url=s.metrics_url, reference_dir=refs),
        config=SidecarConfig(model_name="tiny", window_rows=N_ROWS, window_seconds=3600, drift_min_rows=100),
    )
    app = create_app(sc, manage_loop=False)
    add_server_routes(app, sc)
    srv = Background(app)
    try:
        ce = httpx.Client(base_url=srv.url, timeout=30)
        direct = httpx.Client(base_url=s.base_url, timeout=30)
        ids = []
        for i in range(N_ROWS):
            row = rng.normal(size=(1, 4))
            row[0, 2] += SHIFT
            req = {"instances": row.tolist()}
            resp = direct.post("/v1/models/tiny:predict", json=req)
            assert resp.status_code == 200
            eid = uuid.uuid4().hex
            ids.append((eid, int(resp.json()["predictions"][0])))
            common = {"ce-specversion": "1.0", "ce-id": eid, "ce-source": "http://localhost:9081/",
                      "ce-inferenceservicename": "tiny", "ce-namespace": "default", "ce-component": "predictor",
                      "ce-endpoint": "canary", "content-type": "application/json"}
            events = [
                ({**common, "ce-type": "org.kubeflow.serving.inference.request"}, req),
                ({**common, "ce-type": "org.kubeflow.serving.inference.response"}, resp.json()),
            ]
            if i % 2:  # the halves may arrive in either order
                events.reverse()
            for headers, payload in events:
                assert ce.post("/cloudevents", json=payload, headers=headers).status_code == 202
        bad = ce.post("/cloudevents", json={}, headers={"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s",
                                                        "ce-type": "com.example.other"})
        assert bad.status_code == 400 and "not an inference" in bad.json()["error"]
        assert ce.post("/feedback", json={"items": [{"request_id": e, "label": p} for e, p in ids]}).status_code == 202
        sc.run_once()
        m = scrape(srv.url + "/metrics")
    finally:
        srv.stop()
        sc.close()
    assert one(m, "incidentd_sidecar_payloads_captured_total") == N_ROWS
    assert one(m, "model_cloudevent_pairs_total", model="tiny", endpoint="canary") == N_ROWS
    assert one(m, "model_input_drift_detected", model="tiny") == 1
    assert one(m, "model_accuracy_ratio", model="tiny") == 1.0  # the labels were the model's own answers
    drifted = [dict(ls)["feature"] for (n, ls), v in m.items()
               if n == "model_feature_drift_statistic" and dict(ls).get("test") == "ks" and v > 0.3]
    assert drifted == ["f2"]


def test_cli_auto_detects_mlserver_and_serves_canonical_metrics():
    """``incidentd sidecar --server-kind auto`` as a user runs it: says which kind it chose, then watches it."""
    import subprocess
    import sys

    s = served("mlserver")
    # MLServer creates its per-model series on the first inference; before it, there is no model to name.
    assert httpx.post(s.base_url + s.infer_path(), json=body(s, np.zeros((1, 4)))).status_code == 200
    port = launch.free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "incidentd.cli", "sidecar", "--server-kind", "auto", "--target", s.base_url,
         "--metrics-url", s.metrics_url, "--port", str(port), "--interval", "0.5", "--gpu", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        m: dict = {}
        while time.monotonic() < deadline and one(m, "model_requests_total", model="tiny") is None:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                m = scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "--server-kind auto: chose mlserver" in err.decode()
    assert one(m, "incidentd_sidecar_server_info", kind="mlserver") == 1
    assert one(m, "model_requests_total", model="tiny") is not None
