"""The model server's HTTP contract, in process (FastAPI TestClient)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from incidentd.model_server.app import ModelServerSettings, create_app
from incidentd.model_server.model import load_digits_split

SPLIT = load_digits_split()


def _client(registry: Path, faults: bool = True) -> TestClient:
    return TestClient(create_app(ModelServerSettings(registry_dir=registry, enable_fault_injection=faults,
                                                     device="cpu")))


@pytest.fixture()
def client(registry_dir: Path) -> Iterator[TestClient]:
    with _client(registry_dir) as c:
        yield c


def _accuracy(c: TestClient, n: int = 256) -> float:
    r = c.post("/predict", json={"inputs": SPLIT.x_holdout[:n].tolist()})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    return float(np.mean([p == y for p, y in zip(preds, SPLIT.y_holdout[:n], strict=True)]))


def _metric(c: TestClient, line_start: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_first_start_trains_v1(tmp_path: Path) -> None:
    with _client(tmp_path / "empty", faults=False) as c:
        h = c.get("/healthz").json()
        assert h == {"status": "ok", "version": "v1", "pid": os.getpid()}
        v = c.get("/admin/versions").json()
        assert v["current"] == "v1" and v["known_good"] == "v1"
        meta = v["versions"][0]
        assert meta["holdout_accuracy"] >= 0.93 and len(meta["sha256"]) == 64
        assert meta["feature_names"][:2] == ["pixel_0_0", "pixel_0_1"] and len(meta["feature_names"]) == 64
        assert _accuracy(c) >= 0.93


def test_predict_and_feedback_round_trip(client: TestClient) -> None:
    r = client.post("/predict", json={"inputs": SPLIT.x_holdout[:3].tolist()})
    body = r.json()
    assert r.status_code == 200 and body["version"] == "v1"
    assert len(body["request_ids"]) == 3 == len(set(body["request_ids"]))
    assert body["predictions"] == SPLIT.y_holdout[:3].tolist()
    # integers are numbers too; missing values (null) are accepted and imputed
    assert client.post("/predict", json={"inputs": [[0] * 64]}).status_code == 200
    row = SPLIT.x_holdout[0].tolist()
    row[5] = None
    assert client.post("/predict", json={"inputs": [row]}).status_code == 200
    rid = body["request_ids"][1]
    assert client.post("/feedback", json={"request_id": rid, "label": 2}).json() == {"accepted": 1}
    items = [{"request_id": body["request_ids"][0], "label": 1}, {"request_id": body["request_ids"][2], "label": 0}]
    assert client.post("/feedback", json={"items": items}).json() == {"accepted": 2}
    fb = client.get("/feedback", params={"after": 0}).json()
    assert fb["cursor"] == 3 and fb["records"][0]["request_id"] == rid and fb["records"][0]["label"] == 2
    page = client.get("/predictions", params={"after": 0, "limit": 2}).json()
    assert page["cursor"] == 2 and [r["request_id"] for r in page["records"]] == body["request_ids"][:2]
    rec = page["records"][0]
    assert set(rec) == {"request_id", "ts", "version", "inputs", "prediction", "finite", "latency_seconds",
                        "error"}
    assert rec["finite"] is True and rec["error"] is None and len(rec["inputs"]) == 64
    page2 = client.get("/predictions", params={"after": page["cursor"]}).json()
    assert page2["cursor"] == 5 and page2["records"][-1]["inputs"][5] is None


def test_feedback_unknown_id_is_404(client: TestClient) -> None:
    r = client.post("/feedback", json={"request_id": "no-such-id", "label": 1})
    assert r.status_code == 404 and "no-such-id" in r.text
    assert client.post("/feedback", json={"request_id": "x"}).status_code == 422
    rid = client.post("/predict", json={"inputs": SPLIT.x_holdout[:1].tolist()}).json()["request_ids"][0]
    r = client.post("/feedback", json={"request_id": rid, "label": 10})
    assert r.status_code == 422 and "label" in r.text


@pytest.mark.parametrize(("body", "loc"), [
    ({"inputs": [[1.0] * 63]}, ["body", "inputs", 0]),
    ({"inputs": [[0.0] * 64, [0.0] * 65]}, ["body", "inputs", 1]),
    ({"inputs": [["abc"] + [0.0] * 63]}, ["body", "inputs", 0, 0]),
    ({"inputs": [[0.0] * 10 + ["1.5"] + [0.0] * 53]}, ["body", "inputs", 0, 10]),
    ({"inputs": []}, ["body", "inputs"]),
    ({"inputs": [[0.0] * 64] * 257}, ["body", "inputs"]),
    ({"rows": [[0.0] * 64]}, ["body", "inputs"]),
])
def test_bad_input_is_422_naming_the_field(client: TestClient, body: dict, loc: list) -> None:
    before = _metric(client, 'model_request_errors_total{model="digits",reason="invalid_input"')
    r = client.post("/predict", json=body)
    assert r.status_code == 422
    assert loc in [d["loc"] for d in r.json()["detail"]]
    after = _metric(client, 'model_request_errors_total{model="digits",reason="invalid_input"')
    assert after == before + 1
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nonfinite_input_is_422(client: TestClient, token: str) -> None:
    raw = '{"inputs": [[' + ",".join(["0"] * 7 + [token] + ["0"] * 56) + "]]}"
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert ["body", "inputs", 0, 7] in [d["loc"] for d in r.json()["detail"]]


def test_metrics_contain_contract_names(client: TestClient) -> None:
    client.post("/predict", json={"inputs": SPLIT.x_holdout[:2].tolist()})
    text = client.get("/metrics").text
    for name in ("model_request_duration_seconds_bucket", "model_requests_total", "model_nonfinite_outputs_total",
                 'model_info{model="digits",version="v1"} 1.0', "model_weights_nonfinite",
                 "model_weights_abs_max", "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert name in text, name
    assert 'model_requests_total{model="digits",version="v1"} 1.0' in text


def test_reference(client: TestClient) -> None:
    ref = client.get("/reference").json()
    assert ref["version"] == "v1" and len(ref["feature_names"]) == 64
    assert np.asarray(ref["inputs"]).shape == (len(SPLIT.x_train), 64)
    assert len(ref["predictions"]) == len(SPLIT.x_train)


def test_load_versions_unknown_and_idempotent(client: TestClient) -> None:
    r = client.post("/admin/load", json={"version": "v2"})
    assert r.status_code == 200 and r.json()["changed"] and r.json()["current"] == "v2"
    assert client.get("/healthz").json()["version"] == "v2"
    assert client.get("/admin/versions").json()["current"] == "v2"
    assert _accuracy(client) < 0.3
    assert 'model_info{model="digits",version="v2"} 1.0' in client.get("/metrics").text
    again = client.post("/admin/load", json={"version": "v2"}).json()
    assert again["changed"] is False and "nothing to do" in again["message"]
    r = client.post("/admin/load", json={"version": "v9"})
    assert r.status_code == 404 and "v1" not in r.text and "v2" not in r.text   # no list of other versions
    assert client.post("/admin/load", json={"version": "v1"}).json()["changed"]
    assert _accuracy(client) > 0.9


def test_corrupt_checkpoint_is_422_and_running_version_stays(client: TestClient, registry_dir: Path) -> None:
    model = registry_dir / "versions" / "v2" / "model.pt"
    os.chmod(model, 0o644)
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    r = client.post("/admin/load", json={"version": "v2"})
    assert r.status_code == 422 and "model.pt" in r.json()["detail"] and r.json()["running_version"] == "v1"
    assert str(registry_dir) not in r.text   # never an absolute path
    assert client.get("/healthz").json()["version"] == "v1"
    assert client.get("/admin/versions").json()["current"] == "v1"
    assert _accuracy(client) > 0.9


def test_known_good(client: TestClient) -> None:
    r = client.post("/admin/known-good", json={"version": "v2"}).json()
    assert r == {"known_good": "v2", "previous": "v1", "changed": True}
    assert client.post("/admin/known-good", json={"version": "v8"}).status_code == 404


def test_faults_forbidden_without_flag(registry_dir: Path) -> None:
    with _client(registry_dir, faults=False) as c:
        r = c.post("/admin/faults", json={"fault": "nonfinite_weights", "params": {}})
        assert r.status_code == 403
        assert c.delete("/admin/faults").status_code == 403


def test_nonfinite_weights_counted_and_clamp_restores(client: TestClient) -> None:
    base = _accuracy(client)
    r = client.post("/admin/faults", json={"fault": "nonfinite_weights",
                                           "params": {"count": 8, "value": "inf", "tensor": "net.0.weight"}})
    assert r.status_code == 200 and r.json()["applied"]["count"] == 8
    w = {t["name"]: t for t in client.get("/admin/weights").json()["tensors"]}
    assert w["net.0.weight"]["nonfinite"] == 8 and w["net.0.weight"]["shape"] == [64, 64]
    assert 'model_weights_nonfinite{model="digits",version="v1"} 8.0' in client.get("/metrics").text
    r = client.post("/predict", json={"inputs": SPLIT.x_holdout[:10].tolist()}).json()
    assert r["predictions"].count(None) >= 5
    page = client.get("/predictions", params={"after": 0, "limit": 10_000}).json()
    assert any(rec["finite"] is False and rec["error"] == "nonfinite_output" for rec in page["records"])
    assert _metric(client, 'model_nonfinite_outputs_total{model="digits",version="v1"}') >= 5
    dry = client.post("/admin/clamp", json={"dry_run": True}).json()
    assert dry["changed"] and client.get("/admin/weights").json()["tensors"][1]["nonfinite"] == 8
    rep = client.post("/admin/clamp", json={"bounds": "percentile", "percentile": 99.9}).json()
    assert rep["changed"] and sum(t["nonfinite_repaired"] for t in rep["tensors"]) == 8
    assert set(rep["tensors"][0]) == {"name", "nonfinite_repaired", "clamped", "lower", "upper"}
    assert client.post("/admin/clamp", json={}).json()["changed"] is False      # idempotent
    assert _accuracy(client) >= base - 0.02
    assert 'model_weights_nonfinite{model="digits",version="v1"} 0.0' in client.get("/metrics").text


def test_exploding_weights_then_reload(client: TestClient) -> None:
    r = client.post("/admin/faults", json={"fault": "exploding_weights", "params": {"scale": 1e4, "count": 200}})
    assert r.status_code == 200
    assert _metric(client, 'model_weights_abs_max{model="digits",version="v1"}') > 100
    assert _accuracy(client) < 0.8
    # loading the running version again restores its verified checkpoint (weights differ from disk)
    res = client.post("/admin/load", json={"version": "v1"}).json()
    assert res["changed"] and "reloaded" in res["message"]
    assert _accuracy(client) > 0.9


def test_runtime_faults_and_bad_params(client: TestClient) -> None:
    bad = client.post("/admin/faults", json={"fault": "latency", "params": {"seconds": "slow"}})
    assert bad.status_code == 422 and ["body", "params", "seconds"] in [d["loc"] for d in bad.json()["detail"]]
    assert client.post("/admin/faults", json={"fault": "teleport", "params": {}}).status_code == 422
    assert client.post("/admin/faults", json={"fault": "nonfinite_weights",
                                              "params": {"tensor": "nope"}}).status_code == 422
    client.post("/admin/faults", json={"fault": "null_features", "params": {"fraction": 0.5}})
    client.post("/admin/faults", json={"fault": "latency", "params": {"seconds": 0.2}})
    assert set(client.get("/admin/faults").json()["active"]) == {"null_features", "latency"}
    r = client.post("/predict", json={"inputs": SPLIT.x_holdout[:4].tolist()})
    assert r.status_code == 200
    recs = client.get("/predictions", params={"after": 0}).json()["records"]
    assert sum(v is None for rec in recs for v in rec["inputs"]) > 50
    assert recs[-1]["latency_seconds"] >= 0.2
    cleared = client.delete("/admin/faults").json()
    assert set(cleared["cleared"]) == {"null_features", "latency"} and cleared["still_active"] == {}


def test_corrupt_current_at_start_falls_back_to_known_good(registry_dir: Path) -> None:
    from remediation.registry import ModelRegistry

    reg = ModelRegistry(registry_dir)
    reg.switch("v2")
    meta_path = reg.path("v2") / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with _client(registry_dir) as c:
        assert c.get("/healthz").json()["version"] == "v1"
