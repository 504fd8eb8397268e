"""SIGTERM stops `incidentd serve` cleanly: the cycle ends, the learned baselines are saved, exit 0."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from incidentd.store import Store
from tests.incidentd.metrics_target import Sidecar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate, what: str, proc: subprocess.Popen, limit: float = 60.0) -> None:
    """Poll a condition (the service runs on its own clock); fail naming what never happened."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"incidentd exited ({proc.returncode}) before {what}")
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"never saw {what}")


def test_sigterm_finishes_the_cycle_saves_baselines_and_exits_0(tmp_path):
    target = Sidecar()
    m = 'model="digits",version="v1"'
    target.body = (f"model_up{{{m}}} 1\nmodel_latency_seconds{{{m},quantile=\"0.9\"}} 0.004\n"
                   f"model_predictions_labeled_total{{{m}}} 400\nmodel_predictions_correct_total{{{m}}} 380\n")
    port = _free_port()
    db = tmp_path / "incidentd.db"
    cfg = tmp_path / "incidentd.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(db), "port": port, "scrape_targets": [target.url],
                                   "scrape_interval_seconds": 0.5, "detect_interval_seconds": 0.5,
                                   "security": {"anonymous_scopes": ["read"]}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "incidentd.cli", "serve", "--config", str(cfg)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def latency_seen() -> bool:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/models/digits/signals", timeout=2.0)
            except httpx.TransportError:
                return False
            return r.status_code == 200 and r.json()["signals"]["latency"]["state"] == "inactive"

        _wait_for(latency_seen, "the latency of digits judged on fresh data", proc)
        signalled_at = time.time()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        target.kill()
    assert proc.returncode == 0, out
    assert "stopped on SIGTERM" in out
    store = Store(db)
    try:
        saved = store.get("baselines:digits")
    finally:
        store.close()
    assert saved is not None and "latency" in saved["signals"]
    assert saved["at"] >= signalled_at, "written on the way out, not only by the periodic save"
