"""The demo model server and its real sidecar, scraped by the real Prometheus, shipping to the real
Elasticsearch, under a continuous demo traffic loop.

* Prometheus stores exactly what the sidecar exposes (and PrometheusSource reads it back);
* every Grafana panel query returns data;
* the sidecar's events land in Elasticsearch.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    DASHBOARDS,
    REPO,
    ElasticsearchServer,
    PrometheusServer,
    Server,
    _tempdir,
    free_port,
    http,
    wait_until,
)
from .test_dashboards import _grafana_to_promql, _prom_exprs

pytest.importorskip("torch")

RECORDING = DASHBOARDS / "prometheus" / "rules" / "recording.yml"
# The Prometheus server is shared by the session and may still hold other tests' "digits" series
# (a config reload does not write staleness markers), so this stack's model has its own name.
STACK_MODEL = "stack-digits"


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


class DemoStack:
    def __init__(self, model_url: str, sidecar_url: str, sidecar_port: int, model_port: int) -> None:
        self.model_url = model_url
        self.sidecar_url = sidecar_url
        self.sidecar_port = sidecar_port
        self.model_port = model_port
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.requests = 0

    def traffic(self) -> None:
        """The demo loop: predictions on digit-like inputs, labels fed back for most of them."""
        rng = random.Random(0)
        while not self.stop.is_set():
            if self.paused.is_set():
                self.stop.wait(0.1)
                continue
            rows = [[rng.random() * 16 for _ in range(64)] for _ in range(16)]
            try:
                out = _post(f"{self.model_url}/predict", {"inputs": rows})
                items = [{"request_id": rid, "label": rng.randrange(10)} for rid in out["request_ids"][:12]]
                _post(f"{self.model_url}/feedback", {"items": items})
                self.requests += len(rows)
            except OSError:
                pass
            self.stop.wait(0.1)

    def sidecar_samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"{self.sidecar_url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


@pytest.fixture(scope="module")
def demo_stack(elasticsearch: ElasticsearchServer) -> Iterator[DemoStack]:
    workdir = _tempdir("incidentd-demo-stack-")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    mport, sport = free_port(), free_port()
    model_url, sidecar_url = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{sport}"
    model = Server("model-server", [sys.executable, "-m", "incidentd.cli", "model-server", "--registry",
                                    str(workdir / "registry"), "--port", str(mport), "--device", "cpu",
                                    "--model-name", STACK_MODEL,
                                    "--log-level", "warning"], workdir, env=env,
                   ready=lambda: http("GET", f"{model_url}/healthz")[0] == 200, ready_timeout=240)
    sidecar = Server("sidecar", [sys.executable, "-m", "incidentd.cli", "sidecar", "--target", model_url,
                                 "--port", str(sport), "--interval", "1", "--gpu", "simulated",
                                 "--drift-min-rows", "50", "--model-name", STACK_MODEL,
                                 "--elasticsearch", elasticsearch.url, "--es-index-prefix", "stack",
                                 "--es-spool-dir", str(workdir / "es-spool"), "--log-level", "WARNING"],
                     workdir, env=env, ready=lambda: http("GET", f"{sidecar_url}/healthz")[0] == 200,
                     ready_timeout=60)
    try:
        model.start()
        sidecar.start()
    except RuntimeError as exc:
        model.stop()
        pytest.fail(f"demo stack did not start: {exc}")
    stack = DemoStack(model_url, sidecar_url, sport, mport)
    loop = threading.Thread(target=stack.traffic, daemon=True)
    loop.start()
    yield stack
    stack.stop.set()
    loop.join(10)
    sidecar.stop()
    model.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def scraped(demo_stack: DemoStack, prometheus: PrometheusServer) -> Iterator[DemoStack]:
    prometheus.configure([
        {"job_name": "incidentd-sidecar", "static_configs": [{"targets": [f"127.0.0.1:{demo_stack.sidecar_port}"]}]},
        {"job_name": "model-server", "static_configs": [{"targets": [f"127.0.0.1:{demo_stack.model_port}"]}]},
    ], rule_files=[str(RECORDING)], interval="2s")
    # Wait for the slow signals too: labels joined, the drift window filled.
    assert wait_until(lambda: bool(prometheus.query(f'model_feature_drift_p_value{{model="{STACK_MODEL}"}}'))
                      and bool(prometheus.query(f'model_accuracy_ratio{{model="{STACK_MODEL}"}}')), 120), \
        "the sidecar's drift and accuracy signals never reached Prometheus"
    yield demo_stack
    prometheus.configure([])


# Series that hold still while the traffic loop is paused (not ages such as model_label_lag_seconds).
NAMES = ["model_predictions_labeled_total", "model_predictions_correct_total", "model_requests_total",
         "model_accuracy_ratio", "model_weights_nonfinite", "model_up", "model_drift_window_rows"]
MV = (("model", STACK_MODEL), ("version", "v1"))


def _compare(stack: DemoStack, prometheus: PrometheusServer) -> list[str]:
    """Differences between the sidecar's /metrics and what Prometheus holds for it (empty: equal)."""
    exposed = stack.sidecar_samples()
    if exposed.get(("model_up", MV)) != 1.0:
        return ["the sidecar does not see the model server right now"]
    problems = []
    for name in NAMES:
        series = prometheus.query(f'{name}{{job="incidentd-sidecar",model="{STACK_MODEL}"}}')
        if not series:
            problems.append(f"{name}: not in Prometheus")
        for s in series:
            labels = tuple(sorted((k, v) for k, v in s["metric"].items()
                                  if k not in ("__name__", "job", "instance")))
            if (name, labels) not in exposed:
                problems.append(f"{name}{labels}: in Prometheus, not exposed")
            elif float(s["value"][1]) != pytest.approx(exposed[(name, labels)]):
                problems.append(f"{name}{labels}: {s['value'][1]} != {exposed[(name, labels)]}")
    return problems


def test_prometheus_holds_what_the_sidecar_exposes(scraped: DemoStack, prometheus: PrometheusServer):
    scraped.paused.set()                      # hold the values still while comparing
    paused_at = time.time()
    try:
        problems: list[str] = []

        def equal() -> bool:
            nonlocal problems
            # compare only once Prometheus has scraped every target after the values settled
            if not prometheus.scraped_since(paused_at + 0.5):
                return False
            problems = _compare(scraped, prometheus)
            return not problems

        assert wait_until(equal, 60, interval=0.5), problems
        exposed = scraped.sidecar_samples()
        assert exposed[("model_requests_total", MV)] > 0
        try:
            from incidentd.sources.prometheus import PrometheusSource
        except ImportError:
            return
        got = PrometheusSource(prometheus.url).read("model_accuracy_ratio", {"model": STACK_MODEL},
                                                    time.time() - 10, time.time(), 2.0)
        assert got and got[0].values[-1] == pytest.approx(exposed[("model_accuracy_ratio", MV)])
    finally:
        scraped.paused.clear()


def test_every_grafana_panel_has_data_while_the_demo_runs(scraped: DemoStack, prometheus: PrometheusServer):
    pytest.importorskip("grafana_foundation_sdk")
    from .conftest import DASHBOARDS
    from .test_dashboards import _load

    gen = _load(DASHBOARDS / "grafana" / "generate.py")
    exprs = _prom_exprs(gen)
    empty: list[str] = []

    def all_have_data() -> bool:
        nonlocal empty
        empty = [f"{d} / {title}: {expr}" for d, title, expr in exprs
                 if not prometheus.query(_grafana_to_promql(expr).replace('=~".*"', f'=~"{STACK_MODEL}"'))]
        return not empty

    # A loaded machine can make one sidecar scrape of the model server time out (pass-through
    # series vanish for that cycle), so allow the demo a little time to be whole.
    assert wait_until(all_have_data, 60, interval=1.0), "panels without data:\n" + "\n".join(empty)


def test_every_recording_rule_has_data_while_the_demo_runs(scraped: DemoStack, prometheus: PrometheusServer):
    import yaml

    records = [f'{r["record"]}{{model="{STACK_MODEL}"}}'
               for g in yaml.safe_load(RECORDING.read_text())["groups"] for r in g["rules"]]
    assert wait_until(lambda: all(prometheus.query(r) for r in records), 60), \
        [r for r in records if not prometheus.query(r)]


def test_sidecar_events_reach_elasticsearch(scraped: DemoStack, es_client):
    def stored() -> int:
        es_client.indices.refresh(index="stack-events*")
        return es_client.count(index="stack-events*")["count"]

    assert wait_until(lambda: stored() > 0, 60), "no sidecar event in Elasticsearch"
    hits = es_client.search(index="stack-events*", query={"term": {"service.name": STACK_MODEL}})["hits"]["hits"]
    assert hits and all(h["_source"]["event"]["provider"] == "sidecar" for h in hits)
