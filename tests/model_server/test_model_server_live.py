"""Fault injection against a real uvicorn server process on a free loopback port."""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from incidentd.model_server.model import load_digits_split

from .conftest import LiveServer, start_server

ROWS = load_digits_split().x_holdout[:4].tolist()


def _until(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Waits for a condition of the server process (bounded; a generous timeout, not a deadline to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_starvation_runs_busy_threads_in_the_server_until_its_deadline(live_server: LiveServer) -> None:
    proc = psutil.Process(live_server.proc.pid)
    cpu0 = sum(proc.cpu_times()[:2])
    r = httpx.post(live_server.url + "/admin/faults", json={"fault": "starvation",
                                                            "params": {"threads": 4, "seconds": 3}}, timeout=10)
    assert r.status_code == 200 and r.json()["applied"]["threads"] == 4
    # busy threads burn CPU inside the server process (what starves its requests); an idle server uses
    # a few milliseconds in the same time
    assert _until(lambda: sum(proc.cpu_times()[:2]) - cpu0 > 0.3), "the starvation threads used no CPU"
    # starvation is not a runtime fault DELETE clears: only its deadline (or a restart) ends it
    assert httpx.delete(live_server.url + "/admin/faults", timeout=10).json()["still_active"].get("starvation")
    assert _until(lambda: httpx.get(live_server.url + "/admin/faults", timeout=5).json()["active"] == {})


def _post_quietly(url: str, timeout: float) -> bool:
    try:
        return httpx.post(url + "/predict", json={"inputs": ROWS}, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def test_hang_stalls_predict_until_cleared(live_server: LiveServer) -> None:
    url = live_server.url
    assert httpx.post(url + "/admin/faults", json={"fault": "hang", "params": {"seconds": 60}},
                      timeout=5).status_code == 200
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/predict", json={"inputs": ROWS}, timeout=1.0)
    # many stalled requests hold no worker threads: sync admin endpoints still answer
    with ThreadPoolExecutor(60) as pool:
        futures = [pool.submit(_post_quietly, url, 0.5) for _ in range(60)]
        assert _until(lambda: _gauges(httpx.get(url + "/metrics", timeout=2).text)["model_requests_in_flight"] >= 30)
        assert httpx.get(url + "/admin/versions", timeout=2).status_code == 200
        assert httpx.get(url + "/predictions", params={"after": 0, "limit": 1}, timeout=2).status_code == 200
        assert not any(f.result() for f in futures)
    assert httpx.get(url + "/healthz", timeout=2).status_code == 200      # the process is alive
    # what gives the hang away: requests stay in flight long after their clients gave up (after 1 s)
    assert _until(lambda: _gauges(httpx.get(url + "/metrics", timeout=2).text)[
        "model_oldest_request_age_seconds"] > 1.5)
    assert _gauges(httpx.get(url + "/metrics", timeout=2).text)["model_requests_in_flight"] >= 1
    assert "hang" in httpx.delete(url + "/admin/faults", timeout=5).json()["cleared"]
    assert httpx.post(url + "/predict", json={"inputs": ROWS}, timeout=5).status_code == 200
    assert _until(lambda: _gauges(httpx.get(url + "/metrics", timeout=2).text)["model_requests_in_flight"] == 0)
    healthy = _gauges(httpx.get(url + "/metrics", timeout=2).text)
    assert healthy["model_requests_in_flight"] == 0 and healthy["model_oldest_request_age_seconds"] == 0


def _gauges(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name in ("model_requests_in_flight", "model_oldest_request_age_seconds")}


def test_crash_exits_after_answering_and_restart_serves_same_version(live_server: LiveServer) -> None:
    url = live_server.url
    assert httpx.post(url + "/admin/load", json={"version": "v2"}, timeout=10).json()["current"] == "v2"
    r = httpx.post(url + "/admin/faults", json={"fault": "crash", "params": {}}, timeout=5)
    assert r.status_code == 200 and r.json()["fault"] == "crash"
    live_server.proc.wait(10)
    assert live_server.proc.returncode == 3
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=1)
    restarted = start_server(live_server.registry, port=live_server.port)
    try:
        h = httpx.get(url + "/healthz", timeout=2).json()
        assert h["version"] == "v2" and h["pid"] == restarted.proc.pid
    finally:
        restarted.stop()
