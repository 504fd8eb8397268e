"""``incidentd inject`` against a real model server process on a free loopback port: each fault's effect
is checked where a user would see it (prediction log, feedback log, weights, versions, RSS, GPU file)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from incidentd.commands import inject as inject_mod
from incidentd.injection import FAULTS
from tests.integration.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """incidentd"""

    inject_mod.register(app)
    return app


APP = _app()


def cli(*args: str) -> tuple[int, Any, str]:
    r = runner.invoke(APP, ["inject", *args])
    out = r.stdout.strip()
    try:
        data = json.loads(out) if out else None
    except ValueError:
        data = None
    return r.exit_code, data, r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clone_version(root: Path, src: str, dst: str) -> None:
    """Publish ``dst`` as a byte copy of ``src`` (same checksum), the way the registry publishes: temp dir
    and one rename. Enough for inject's contract (bad_version = POST /admin/load of a named version)
    without paying for torch and training in the test process."""
    tmp = root / "versions" / f".tmp-{dst}"
    shutil.copytree(root / "versions" / src, tmp)
    meta = json.loads((tmp / "metadata.json").read_text())
    meta.update(version=dst, parent=src, created=meta.get("created", 0) + 1, notes="test copy")
    (tmp / "metadata.json").write_text(json.dumps(meta))
    os.rename(tmp, root / "versions" / dst)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("inject") / "registry"
    port = _free_port()
    # The same app and uvicorn as ``python -m incidentd.model_server``, in its own process; it trains v1
    # into the empty registry at start with two epochs (these tests need loadable versions, not a good
    # model), so this process never imports torch.
    script = (
        "import uvicorn\n"
        "from incidentd.model_server.app import ModelServerSettings, create_app\n"
        f"app = create_app(ModelServerSettings(registry_dir={str(root)!r}, enable_fault_injection=True, "
        "device='cpu', train_epochs=2))\n"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"model server exited with {proc.returncode}"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "model server did not start"
        time.sleep(0.2)
    _clone_version(root, "v1", "v2")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def url(server: str) -> Iterator[str]:
    yield server
    httpx.delete(server + "/admin/faults", timeout=10)


ROW = [float((i * 7) % 17) for i in range(64)]   # integer intensities 0..16 like the digits data


_cursor: dict[str, int] = {}     # prediction-log cursor per server: read only what is new


def predict(url: str, rows: list[list[float]]) -> list[dict[str, Any]]:
    r = httpx.post(url + "/predict", json={"inputs": rows}, timeout=10)
    assert r.status_code == 200, r.text
    ids = set(r.json()["request_ids"])
    page = httpx.get(url + "/predictions", params={"after": _cursor.get(url, 0), "limit": 10_000},
                     timeout=10).json()
    _cursor[url] = page["cursor"]
    return [rec for rec in page["records"] if rec["request_id"] in ids]


def feedback_records(url: str) -> list[dict[str, Any]]:
    return httpx.get(url + "/feedback", params={"limit": 10_000}, timeout=10).json()["records"]


# ------------------------------------------------------------------ data


def test_unit_change_multiplies_one_feature_by_1000(url: str) -> None:
    code, out, text = cli("unit_change", "--param", "feature=20", "--param", "factor=1000", "--target", url)
    assert code == 0, text
    assert out["fault"] == "unit_change" and out["simulates"] == "data.schema_change"
    assert out["response"]["applied"] == {"feature": 20, "factor": 1000.0}
    (rec,) = predict(url, [ROW])
    assert rec["inputs"][20] == ROW[20] * 1000
    assert [v for i, v in enumerate(rec["inputs"]) if i != 20] == [v for i, v in enumerate(ROW) if i != 20]


def test_covariate_drift_shifts_the_chosen_features(url: str) -> None:
    code, _, text = cli("covariate_drift", "-p", "fraction=1", "-p", "features=3,4", "-p", "shift=8",
                          "--target", url)
    assert code == 0, text
    recs = predict(url, [ROW] * 5)
    for rec in recs:
        assert rec["inputs"][3] == ROW[3] + 8 and rec["inputs"][4] == ROW[4] + 8
        assert rec["inputs"][5] == ROW[5]


def test_partial_covariate_drift_touches_about_that_fraction(url: str) -> None:
    assert cli("input_drift", "-p", "fraction=0.5", "-p", "features=0", "-p", "shift=100", "--target", url)[0] == 0
    recs = predict(url, [ROW] * 200)
    shifted = sum(r["inputs"][0] == ROW[0] + 100 for r in recs)
    assert 60 < shifted < 140


def test_null_features_surge(url: str) -> None:
    assert cli("null_features", "-p", "fraction=1", "--target", url)[0] == 0
    (rec,) = predict(url, [ROW])
    assert rec["inputs"] == [None] * 64


def test_unseen_categories_are_codes_outside_training(url: str) -> None:
    assert cli("unseen_categories", "-p", "fraction=1", "-p", "features=7", "-p", "low=17", "-p", "high=20",
               "--target", url)[0] == 0
    recs = predict(url, [ROW] * 10)
    assert all(17 <= r["inputs"][7] <= 20 and float(r["inputs"][7]).is_integer() for r in recs)


def test_label_stall_holds_feedback_until_cleared(url: str) -> None:
    (rec,) = predict(url, [ROW])
    before = len(feedback_records(url))
    code, out, _ = cli("label_stall", "--target", url)
    assert code == 0 and out["response"]["applied"] == {"mode": "hold"}
    r = httpx.post(url + "/feedback", json={"request_id": rec["request_id"], "label": 3}, timeout=10)
    assert r.status_code == 200 and r.json() == {"accepted": 0, "stalled": 1}
    assert len(feedback_records(url)) == before                      # held: nothing arrives
    active = httpx.get(url + "/admin/faults", timeout=5).json()["active"]
    assert active["label_stall"]["held"] == 1
    code, out, _ = cli("clear", "--target", url)
    assert code == 0 and "label_stall" in out["response"]["cleared"]
    assert out["response"]["released_labels"] == 1
    after = feedback_records(url)
    assert len(after) == before + 1 and after[-1]["request_id"] == rec["request_id"] and after[-1]["label"] == 3


def test_label_stall_drop_mode_loses_labels(url: str) -> None:
    (rec,) = predict(url, [ROW])
    before = len(feedback_records(url))
    assert cli("label_stall", "-p", "mode=drop", "--target", url)[0] == 0
    httpx.post(url + "/feedback", json={"request_id": rec["request_id"], "label": 3}, timeout=10)
    cli("clear", "--target", url)
    assert len(feedback_records(url)) == before


def test_concept_drift_remaps_incoming_labels(url: str) -> None:
    code, out, _ = cli("concept_drift", "-p", "fraction=1", "-p", "shift=3", "--target", url)
    assert code == 0 and out["simulates"] == "model.concept_drift"
    recs = predict(url, [ROW] * 3)
    items = [{"request_id": r["request_id"], "label": y} for r, y in zip(recs, [0, 7, 9], strict=True)]
    assert httpx.post(url + "/feedback", json={"items": items}, timeout=10).json() == {"accepted": 3}
    got = {f["request_id"]: f["label"] for f in feedback_records(url)}
    assert [got[r["request_id"]] for r in recs] == [3, 0, 2]


# ------------------------------------------------------------------ model


def test_nonfinite_and_exploding_weights(url: str) -> None:
    code, out, _ = cli("nonfinite_weights", "-p", "count=5", "--target", url)
    assert code == 0 and out["response"]["applied"]["count"] == 5
    w = httpx.get(url + "/admin/weights", timeout=10).json()["tensors"]
    assert sum(t["nonfinite"] for t in w) == 5
    max_before = max(abs(t["max"]) for t in w)
    assert cli("exploding_weights", "-p", "scale=1e6", "-p", "count=50", "--target", url)[0] == 0
    w = httpx.get(url + "/admin/weights", timeout=10).json()["tensors"]
    assert max(max(abs(t["max"]), abs(t["min"])) for t in w) > 100 * max_before
    # repair for the next tests: reload the verified checkpoint
    assert httpx.post(url + "/admin/load", json={"version": "v1"}, timeout=30).json()["changed"]


def test_bad_version_deploys_the_given_version(url: str) -> None:
    code, out, text = cli("bad_version", "--param", "version=v2", "--target", url)
    assert code == 0, text
    assert out["via"] == "POST /admin/load" and out["response"]["current"] == "v2"
    v = httpx.get(url + "/admin/versions", timeout=10).json()
    assert v["running"] == "v2" and v["known_good"] == "v1"
    assert httpx.post(url + "/admin/load", json={"version": "v1"}, timeout=30).status_code == 200
    code, _, text = cli("bad_version", "--param", "version=v9", "--target", url)
    assert code == 1 and "404" in text


# ------------------------------------------------------------------ hardware


def test_memory_pressure_grows_rss(url: str) -> None:
    import psutil

    proc = psutil.Process(httpx.get(url + "/healthz", timeout=5).json()["pid"])
    rss0 = proc.memory_info().rss
    code, out, _ = cli("memory_pressure", "-p", "megabytes=200", "-p", "step_megabytes=100",
                       "-p", "interval_seconds=0", "--target", url)
    assert code == 0 and out["simulates"] == "hardware.memory_pressure"
    deadline = time.monotonic() + 10
    while proc.memory_info().rss - rss0 < 180 * 2**20:
        assert time.monotonic() < deadline, (rss0, proc.memory_info().rss)
        time.sleep(0.1)
    code, out, _ = cli("clear", "--target", url)
    assert "memory_balloon" in out["response"]["cleared"]
    assert proc.memory_info().rss - rss0 < 100 * 2**20          # numpy's large buffers go back to the OS
    code, _, text = cli("memory_pressure", "-p", "megabytes=65536", "--target", url)
    assert code == 2 and "'megabytes'" in text


def test_cpu_contention_and_hang(url: str) -> None:
    code, out, _ = cli("cpu_contention", "-p", "threads=1", "-p", "seconds=0.5", "--target", url)
    assert code == 0 and out["response"]["applied"]["threads"] == 1
    assert cli("hang", "-p", "seconds=30", "--target", url)[0] == 0
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/predict", json={"inputs": [ROW]}, timeout=1.0)
    code, out, _ = cli("clear", "--target", url)
    assert "hang" in out["response"]["cleared"]
    assert httpx.post(url + "/predict", json={"inputs": [ROW]}, timeout=10).status_code == 200


def test_gpu_faults_write_the_sidecar_state_file(tmp_path: Path, url: str) -> None:
    from collector.gpu import SimulatedGPUSource

    state = tmp_path / "gpu.json"

    def read() -> list:
        # a fresh reader each time: it loads the file as the sidecar would after the change (a reused one
        # re-reads on a new mtime, which two writes within one filesystem timestamp tick do not give)
        return SimulatedGPUSource(state, count=2).read()

    assert [r.throttled for r in read()] == [False, False]
    code, out, text = cli("gpu_thermal", "-p", f"gpu_state={state}", "--target", url)
    assert code == 0, text
    assert out["gpu_state"] == {"temperature_celsius": 92.0, "throttled": True}
    assert [(r.temperature_celsius, r.throttled) for r in read()] == [(92.0, True), (92.0, True)]
    assert cli("gpu_errors", "-p", f"gpu_state={state}", "--target", url)[0] == 0
    assert cli("gpu_errors", "-p", f"gpu_state={state}", "-p", "gpu=1", "-p", "ecc=2", "-p", "xid=1",
               "--target", url)[0] == 0
    r0, r1 = read()
    assert (r0.ecc_errors_total, r1.ecc_errors_total, r1.xid_errors_total) == (1, 3, 1)
    code, out, _ = cli("clear", "-p", f"gpu_state={state}", "--target", url)
    assert code == 0
    r0, r1 = read()
    assert (r0.throttled, r0.temperature_celsius, r1.ecc_errors_total) == (False, 55.0, 3)  # counters stay


# ------------------------------------------------------------------ errors and listing


@pytest.mark.parametrize("args, needle", [
    (["teleport"], "unknown fault 'teleport'"),
    (["unit_change", "-p", "facter=10"], "parameter 'facter': unknown parameter; known: feature, factor"),
    (["unit_change", "-p", "factor=big"], "parameter 'factor': Input should be a valid number"),
    (["unit_change", "-p", "factor"], "expected KEY=VALUE"),
    (["covariate_drift", "-p", "features=1,x"], "parameter 'features'"),
    (["gpu_thermal", "-p", "throttled=maybe", "-p", "gpu_state=/tmp/x.json"], "parameter 'throttled': Input should be a valid boolean"),
    (["bad_version"], "parameter 'version': required"),
    (["gpu_errors"], "parameter 'gpu_state': required"),
    (["null_features", "-p", "fraction=2"], "parameter 'fraction': Input should be less than or equal to 1"),
    (["covariate_drift", "-p", "features=99"], "parameter 'features': indices [99] out of range 0..63"),   # needs the model
    (["label_stall", "-p", "mode=later"], "parameter 'mode'"),
    (["concept_drift", "-p", "shift=10"], "parameter 'shift'"),
    (["unit_change", "-p", "factor=1", "-p", "factor=2"], "given twice"),
])
def test_bad_parameters_exit_2_naming_the_parameter(url: str, args: list[str], needle: str) -> None:
    code, out, text = cli(*args, "--target", url)
    assert code == 2 and needle in text and out is None, text
    assert httpx.get(url + "/admin/faults", timeout=5).json()["active"] == {}


def test_server_without_fault_injection_exits_1() -> None:
    """The 403 body is the model server's own (incidentd/model_server/app.py); a stub serves it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Forbidden(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"detail": "fault injection is disabled; start with --enable-fault-injection"})
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        code, out, text = cli("null_features", "--target", f"http://127.0.0.1:{srv.server_address[1]}")
    finally:
        srv.shutdown()
        srv.server_close()
    assert code == 1 and out is None and "fault injection is disabled" in text


def test_unreachable_target_exits_1() -> None:
    code, _, text = cli("null_features", "--target", f"http://127.0.0.1:{_free_port()}", "--timeout", "2")
    assert code == 1 and "failed" in text


def test_list_documents_every_fault() -> None:
    code, out, _ = cli("list")
    assert code == 0
    names = {f["fault"] for f in out}
    assert names == set(FAULTS)
    assert {f["domain"] for f in out} == {"model", "data", "hardware"}
    docs = (REPO / "docs" / "faults.md").read_text()
    missing = [n for n in names if f"`{n}`" not in docs]
    assert not missing, f"faults not documented in docs/faults.md: {missing}"


# ------------------------------------------------------------------ defaults the sidecar can see


@pytest.fixture(scope="module")
def monitor(server: str) -> tuple[dict[str, Any], Any]:
    """The sidecar's drift monitor fitted on the running version's reference, as the sidecar does."""
    import numpy as np

    from collector.drift_monitor import DriftMonitor
    from detectors.types import Reference

    ref = httpx.get(server + "/reference", timeout=30).json()
    mon = DriftMonitor(min_rows=200)
    mon.fit(Reference(ref["version"], np.asarray(ref["inputs"], float), np.asarray(ref["predictions"], int),
                      tuple(ref["feature_names"])))
    return ref, mon


@pytest.mark.parametrize("fault", ["covariate_drift", "unit_change", "unseen_categories"])
def test_data_faults_with_defaults_drift_for_the_sidecars_monitor(
        url: str, monitor: tuple[dict[str, Any], Any], fault: str) -> None:
    """With default parameters each data fault makes the sidecar's drift monitor (KS/PSI, BH-corrected)
    report drifted features on the prediction log; the same rows without the fault do not drift."""
    import numpy as np

    ref, mon = monitor
    rng = np.random.default_rng(0)
    rows = np.asarray(ref["inputs"], float)[rng.choice(len(ref["inputs"]), 400, replace=False)].tolist()

    def window() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(rows), 200):
            out += predict(url, rows[i:i + 200])
        return out

    def compare(recs: list[dict[str, Any]]) -> Any:
        x = np.array([[np.nan if v is None else v for v in r["inputs"]] for r in recs], float)
        res = mon.compare(ref["version"], x, np.array([r["prediction"] or 0 for r in recs]))
        assert res is not None
        return res

    before = compare(window())
    assert before.drifted_features == ()
    assert before.unit_change_features == () and before.unseen_category_features == ()
    assert cli(fault, "--target", url)[0] == 0
    after = compare(window())
    assert len(after.drifted_features) >= 1
    # ... and the sidecar's schema checks tell the three apart (what the default rules rank on)
    assert bool(after.unit_change_features) is (fault == "unit_change")
    assert bool(after.unseen_category_features) is (fault == "unseen_categories")


# ------------------------------------------------------------------ slow faults (issue 18)


def test_memory_leak_grows_rss_steadily_until_cleared(url: str) -> None:
    import psutil

    proc = psutil.Process(httpx.get(url + "/healthz", timeout=5).json()["pid"])
    rss0 = proc.memory_info().rss
    code, out, _ = cli("memory_leak", "-p", "rate=100", "-p", "limit_megabytes=150", "-p", "oom=false",
                       "--target", url)
    assert code == 0 and out["simulates"] == "hardware.memory_leak"
    assert out["response"]["applied"]["seconds_to_limit"] == 1.5
    def leaked() -> float:
        return float(httpx.get(url + "/admin/faults", timeout=5).json()["active"]["memory_leak"]["leaked_mb"])

    # waits on the server's own report (slow under load); the bound only keeps a leak that never grows from hanging
    assert wait_until(lambda: leaked() >= 149, timeout=300, interval=0.05), leaked()
    assert proc.memory_info().rss - rss0 >= 140 * 2**20               # written pages: resident memory
    assert leaked() == pytest.approx(150, abs=1)                      # stops at the limit without oom
    code, out, _ = cli("clear", "--target", url)
    assert "memory_leak" in out["response"]["cleared"]
    assert proc.memory_info().rss - rss0 < 80 * 2**20


def test_a_leak_at_its_limit_exits_like_an_oom_kill() -> None:
    script = ("import time\nfrom incidentd.model_server.faults import MemoryLeak\n"
              "MemoryLeak(rate_mb=200.0, limit_mb=20, oom=True, tick=0.01)\ntime.sleep(30)\n")
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                       capture_output=True, timeout=60)
    assert r.returncode == 137


def test_latency_creep_is_injected_grows_to_its_cap_and_clears(url: str) -> None:
    """The CLI reaches the server's creep; its growth per second is tested with an injected clock in
    tests/model_server/test_slow_faults.py. Here: the server reports it growing, capped, then gone."""
    def added() -> float:
        r = httpx.get(url + "/admin/faults", timeout=10)
        return float(r.json()["active"].get("latency_creep", {}).get("added_seconds", -1.0))

    code, out, _ = cli("latency_creep", "-p", "ramp=0.2", "-p", "max_seconds=0.3", "--target", url)
    assert code == 0 and out["response"]["applied"]["seconds_to_max"] == 1.5
    seen: list[float] = []

    def capped() -> bool:                     # the server's own report, every reading kept
        seen.append(added())
        return seen[-1] >= 0.3

    assert wait_until(capped, timeout=100, interval=0.05), seen[-5:]
    assert seen[-1] == 0.3 and added() == 0.3 and seen == sorted(seen)   # grows, then stays at its cap
    assert httpx.post(url + "/predict", json={"inputs": [ROW]}, timeout=10).status_code == 200
    code, out, _ = cli("clear", "--target", url)
    assert "latency_creep" in out["response"]["cleared"]
    assert added() == -1.0


def test_disk_fill_writes_where_the_server_writes_and_clear_removes_it(url: str) -> None:
    code, out, _ = cli("disk_fill", "-p", "rate=200", "-p", "megabytes=64", "--target", url)
    assert code == 0 and out["simulates"] == "hardware.disk_full"
    directory = Path(out["response"]["applied"]["directory"])
    assert directory.name == ".fault-disk-fill" and directory.parent.name == "registry"
    deadline = time.monotonic() + 15
    while sum(f.stat().st_size for f in directory.glob("*")) < 64 * 2**20:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, out, _ = cli("clear", "--target", url)
    assert "disk_fill" in out["response"]["cleared"] and not directory.exists()
    code, _, text = cli("disk_fill", "-p", "megabytes=1000000", "--target", url)
    assert code == 2 and "'megabytes'" in text
