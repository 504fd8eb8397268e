"""The sidecar against the real demo model server (uvicorn on a free loopback port, in this process).

Checks real values end to end: latency quantiles, accuracy from delayed labels, drift on shifted traffic,
per-version windows after a model swap, and a model-server restart.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.gpu import SimulatedGPUSource
from collector.sidecar import Sidecar, SidecarConfig
from collector.sinks import MemorySink

pytest.importorskip("torch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(10)


def start_model_server(registry: Path, port: int | None = None) -> Server:
    import uvicorn

    from incidentd.model_server.app import ModelServerSettings, create_app

    port = port or free_port()
    app = create_app(ModelServerSettings(registry_dir=registry, device="cpu", enable_fault_injection=True))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url, port, server, thread)
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("model server did not start")


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from incidentd.model_server.model import train_version
    from remediation.registry import ModelRegistry

    root = tmp_path_factory.mktemp("sidecar") / "registry"
    reg = ModelRegistry(root)
    train_version(reg, "v1", epochs=10, mark_known_good=True, make_current=True)
    train_version(reg, "v2", epochs=3, shuffle_labels=True, parent="v1")  # a deliberately bad release
    return root


@pytest.fixture(scope="module")
def holdout() -> tuple[np.ndarray, np.ndarray]:
    from incidentd.model_server.model import load_digits_split

    split = load_digits_split()
    return split.x_holdout, split.y_holdout


@pytest.fixture()
def server(registry_dir: Path) -> Iterator[Server]:
    s = start_model_server(registry_dir)
    yield s
    s.stop()


def send(url: str, x: np.ndarray, y: np.ndarray | None, batch: int = 40) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(0, len(x), batch):
            r = c.post("/predict", json={"inputs": x[i : i + batch].tolist()})
            assert r.status_code == 200, r.text
            if y is not None:
                items = [
                    {"request_id": rid, "label": int(lab)}
                    for rid, lab in zip(r.json()["request_ids"], y[i : i + batch], strict=True)
                ]
                assert c.post("/feedback", json={"items": items}).status_code == 200


def exposition(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_real_signals_drift_and_version_change(
    server: Server, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = holdout
    registry, sink = CollectorRegistry(), MemorySink()
    sc = Sidecar(
        server.url,
        interval=0.2,
        gpu_source=SimulatedGPUSource(),
        registry=registry,
        sink=sink,
        config=SidecarConfig(window_rows=400, window_seconds=600),
    )
    try:
        sc.run_once()  # the counters' starting point: the error ratio is over requests between cycles
        send(server.url, x, y)  # 360 in-distribution rows, all labeled
        snap = sc.run_once()
        assert snap.up and snap.version == "v1" and snap.model == "digits"
        assert snap.window.rows == len(x)
        q = snap.latency_quantiles
        assert 0 < q[0.5] <= q[0.9] <= q[0.99] < 5
        assert snap.accuracy is not None and snap.accuracy.labeled_total == len(x)
        assert snap.accuracy_ratio is not None and snap.accuracy_ratio > 0.85
        assert snap.label_lag_seconds is not None and snap.label_lag_seconds >= 0   # measured, not missing
        assert snap.error_ratio == 0.0 and snap.window.nonfinite_ratio == 0.0
        assert snap.drift is not None
        assert not snap.drift.detected, snap.drift.drifted_features
        assert snap.drift.prediction_psi is not None and snap.drift.prediction_psi < 0.25
        assert snap.process is not None and snap.process.alive
        assert snap.process.resident_memory_bytes is not None and snap.process.resident_memory_bytes > 0

        values = exposition(registry)
        mv = (("model", "digits"), ("version", "v1"))
        assert values[("model_up", mv)] == 1.0
        assert values[("model_latency_seconds", tuple(sorted((*mv, ("quantile", "0.5")))))] > 0
        assert values[("model_requests_total", mv)] == len(range(0, len(x), 40))
        assert values[("model_predictions_labeled_total", mv)] == len(x)
        assert values[("model_input_drift_detected", mv)] == 0.0
        assert (
            "model_feature_drift_statistic",
            tuple(sorted((*mv, ("feature", "pixel_0_0"), ("test", "ks")))),
        ) in values
        assert all(np.isfinite(v) for v in values.values())

        shifted = np.clip(x + np.where(np.arange(64) % 8 >= 4, 6.0, 0.0), 0, 16)  # right half brighter
        send(server.url, shifted, None)
        snap = sc.run_once()
        assert snap.drift is not None and snap.drift.detected
        assert len(snap.drift.drifted_features) >= 5
        assert exposition(registry)[("model_input_drift_detected", mv)] == 1.0
        assert any(e["event_type"] == "drift_changed" and e["detected"] for e in sink.events)

        # swap to the bad release: windows, drift and accuracy are per version
        assert httpx.post(server.url + "/admin/load", json={"version": "v2"}, timeout=10).status_code == 200
        snap = sc.run_once()
        assert snap.version == "v2" and snap.window.rows == 0 and snap.drift is None
        assert next(e for e in sink.events if e["event_type"] == "version_change")["new_version"] == "v2"
        send(server.url, x[:200], y[:200])
        snap = sc.run_once()
        assert snap.window.rows == 200 and {r.version for r in sc._window.records()} == {"v2"}
        assert snap.accuracy is not None and snap.accuracy.labeled_total == 200
        assert snap.accuracy_ratio is not None and snap.accuracy_ratio < 0.5
        assert snap.accuracy_by_version["v1"].labeled_total == len(x)
        assert snap.drift is not None and not snap.drift.detected  # v2's own reference, same inputs
        values = exposition(registry)
        v2 = (("model", "digits"), ("version", "v2"))
        assert values[("model_accuracy_ratio", v2)] < 0.5
        assert values[("model_predictions_labeled_total", mv)] == len(x)
    finally:
        sc.close()


def test_restart_of_the_model_server(registry_dir: Path, holdout: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = holdout
    server = start_model_server(registry_dir)
    registry, sink = CollectorRegistry(), MemorySink()
    sc = Sidecar(
        server.url,
        interval=0.1,
        gpu_source=None,
        registry=registry,
        sink=sink,
        config=SidecarConfig(window_seconds=600, timeout_seconds=1.0, process_source="scrape"),
    )
    try:
        send(server.url, x[:80], y[:80])
        first = sc.run_once()
        assert first.accuracy is not None and first.accuracy.labeled_total == 80
        assert first.process is not None and first.process.resident_memory_bytes is not None
        assert first.process.resident_memory_bytes > 1e6  # from process_*
        server.stop()
        snap = sc.run_once()
        assert not snap.up and snap.scrape_errors_total == 1
        mv = (("model", "digits"), ("version", first.version))  # the version the registry points at
        down = exposition(registry)
        assert down[("model_up", mv)] == 0.0
        # Nothing derived from the model's answers is exported at its last value while it cannot be read.
        derived = ("model_accuracy_ratio", "model_error_ratio", "model_latency_seconds",
                   "model_throughput_requests_per_second", "model_window_predictions", "model_drifted_features",
                   "model_feature_drift_statistic", "model_nonfinite_output_ratio")
        assert not [k for k in down if k[0] in derived], sorted(k for k in down if k[0] in derived)
        assert snap.accuracy is None and snap.error_ratio is None and snap.window.latency_quantiles == {}
        server = start_model_server(registry_dir, port=server.port)  # fresh logs: cursors start again
        send(server.url, x[:40], y[:40])
        snap = sc.run_once()
        assert snap.up and snap.accuracy is not None and snap.accuracy.labeled_total == 120
        kinds = [e["event_type"] for e in sink.events]
        assert kinds == ["scrape_failed", "scrape_recovered"]
        sc.start()  # the background loop also runs: it scrapes again without being asked
        def scrapes() -> int:
            snap = sc.snapshot()
            return 0 if snap is None else snap.scrapes_total

        deadline = time.monotonic() + 30
        while scrapes() <= 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sc.stop()
        assert scrapes() > 3
    finally:
        sc.close()
        server.stop()
