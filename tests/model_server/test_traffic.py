"""TrafficDriver against a real uvicorn server (in a thread) and against a dead port."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from incidentd.model_server.traffic import TrafficDriver

from .conftest import free_port


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on a free loopback port, run by uvicorn in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    assert _wait(lambda: server.started, 20)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    th.join(10)


@pytest.fixture()
def threaded_server(registry_dir: Path) -> Iterator[str]:
    from incidentd.model_server.app import ModelServerSettings, create_app

    with serving(create_app(ModelServerSettings(registry_dir=registry_dir, device="cpu"))) as url:
        yield url


def _wait(pred, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sends_predictions_and_delayed_labels(threaded_server: str) -> None:
    d = TrafficDriver(threaded_server, rate_per_second=40, label_delay_seconds=0.3, batch_size=2, seed=1,
                      label_fraction=0.5)
    with d:
        assert _wait(lambda: d.stats().labels_sent >= 5)
        d.set_label_stall(True)
        # two more predictions: the loop iteration that was sending labels when the stall began is over
        sent = d.stats().requests_sent
        assert _wait(lambda: d.stats().requests_sent >= sent + 2)
        stalled_at = d.stats().labels_sent
        # 60 predictions at 40/s take 1.5 s; less the at most 1 s the driver bursts to catch up, that is
        # longer than the 0.3 s label delay: labels came due and were held
        sent = d.stats().requests_sent
        assert _wait(lambda: d.stats().requests_sent >= sent + 60)
        assert d.stats().labels_sent == stalled_at and d.stats().labels_pending > 0
        d.set_label_stall(False)
        assert _wait(lambda: d.stats().labels_sent > stalled_at)
    s = d.stats()
    assert s.requests_sent >= 5 and s.requests_failed == 0 and s.rows_sent == 2 * s.requests_sent
    assert 0 < s.labels_sent + s.labels_pending < s.rows_sent      # label_fraction 0.5
    fb = httpx.get(threaded_server + "/feedback", params={"after": 0, "limit": 10_000}).json()["records"]
    assert len(fb) == s.labels_sent and s.labels_failed == 0


def test_drift_shifts_the_chosen_features(threaded_server: str) -> None:
    d = TrafficDriver(threaded_server, rate_per_second=50, label_delay_seconds=60, batch_size=8, seed=2)
    d.set_drift(1.0, features=[3, 4], scale=1.0, shift=100.0)
    with d:
        assert _wait(lambda: d.stats().requests_sent >= 3)
    recs = httpx.get(threaded_server + "/predictions", params={"after": 0, "limit": 10_000}).json()["records"]
    x = np.array([r["inputs"] for r in recs])
    assert (x[:, [3, 4]] >= 100).all() and (x[:, 5] <= 16).all()
    with pytest.raises(ValueError):
        d.set_drift(0.5, features=[64])


def test_survives_a_dead_server() -> None:
    d = TrafficDriver(f"http://127.0.0.1:{free_port()}", rate_per_second=20, label_delay_seconds=0.1,
                      timeout_seconds=0.5)
    with d:
        assert _wait(lambda: d.stats().requests_failed >= 3)
        assert d._thread is not None and d._thread.is_alive()
    assert d.stats().requests_sent == 0


@pytest.fixture()
def oip_recorder() -> Iterator[tuple[str, list[dict], list[dict]]]:
    """A minimal OIP v2 endpoint and a /feedback sink in one uvicorn app (what the driver talks to)."""
    from fastapi import FastAPI

    app = FastAPI()
    infers: list[dict] = []
    labels: list[dict] = []

    @app.post("/v2/models/{model}/infer")
    def infer(model: str, body: dict) -> dict:
        infers.append({"model": model, **body})
        n = body["inputs"][0]["shape"][0]
        return {"model_name": model, "id": body["id"],
                "outputs": [{"name": "y", "shape": [n, 1], "datatype": "INT64", "data": [0] * n}]}

    @app.post("/feedback", status_code=202)
    def feedback(body: dict) -> dict:
        labels.append(body)
        return {"accepted": 1}

    with serving(app) as url:
        yield url, infers, labels


def test_oip_traffic_labels_each_row_by_the_id_the_sidecar_gives_it(oip_recorder) -> None:
    url, infers, labels = oip_recorder
    d = TrafficDriver(url, rate_per_second=40, label_delay_seconds=0.1, batch_size=2, seed=3, protocol="oip",
                      model="digits", feedback_url=url + "/feedback")
    with d:
        assert _wait(lambda: d.stats().labels_sent >= 6)
    s = d.stats()
    assert s.requests_failed == 0 and s.labels_failed == 0       # a 202 from /feedback is a label accepted
    first = infers[0]
    assert first["model"] == "digits" and first["inputs"][0]["shape"] == [2, 64]
    assert len(first["inputs"][0]["data"]) == 128 and first["inputs"][0]["datatype"] == "FP32"
    sent_ids = {f"{i['id']}/{k}" for i in infers for k in range(2)}
    assert labels and {lab["request_id"] for lab in labels} <= sent_ids


def test_concept_drift_changes_labels_not_inputs(oip_recorder) -> None:
    url, infers, labels = oip_recorder
    d = TrafficDriver(url, rate_per_second=50, label_delay_seconds=0.05, batch_size=1, seed=4, protocol="oip",
                      feedback_url=url + "/feedback")
    truth = {tuple(x): int(y) for x, y in zip(d._x.tolist(), d._y.tolist(), strict=True)}
    d.set_concept_drift(1.0, shift=3)
    with d:
        assert _wait(lambda: len(labels) >= 10)
    by_id = {i["id"]: tuple(i["inputs"][0]["data"]) for i in infers}
    for lab in labels[:10]:
        x = by_id[lab["request_id"]]
        assert x in truth                                           # inputs untouched
        assert lab["label"] == (truth[x] + 3) % 10                  # every label moved by the shift


def test_unseen_codes_are_integers_outside_the_training_range(oip_recorder) -> None:
    url, infers, _ = oip_recorder
    d = TrafficDriver(url, rate_per_second=50, label_delay_seconds=60, batch_size=8, seed=5, protocol="oip",
                      feedback_url=url + "/feedback")
    d.set_unseen_codes(1.0, [3, 4], low=17, high=64)
    with d:
        assert _wait(lambda: len(infers) >= 3)
    x = np.array([i["inputs"][0]["data"] for i in infers]).reshape(-1, 64)
    assert ((x[:, [3, 4]] >= 17) & (x[:, [3, 4]] <= 64)).all() and (x[:, [3, 4]] == np.round(x[:, [3, 4]])).all()
    assert (x[:, 5] <= 16).all()
