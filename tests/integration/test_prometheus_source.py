"""PrometheusSource against a real Prometheus: the same values the exporter exposes come back."""
from __future__ import annotations

import math
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from incidentd.errors import SourceUnavailable

from .conftest import PrometheusServer, free_port, wait_until

PrometheusSource = pytest.importorskip("incidentd.sources.prometheus").PrometheusSource
MODEL = "source-test"             # a model no other test uses: the Prometheus server is shared
ODD = 'we"ird\\model'


@pytest.fixture()
def two_targets(prometheus: PrometheusServer):
    """The same series from two jobs (sidecar pass-through and model server), plus odd values."""
    servers = []
    ports = []
    for value in (0.25, 0.75):
        reg = CollectorRegistry()
        g = Gauge("model_error_ratio", "", ["model", "version"], registry=reg)
        g.labels(MODEL, "v1").set(value)
        g.labels(ODD, "v1").set(math.nan)
        port = free_port()
        server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
        servers.append(server)
        ports.append(port)
    prometheus.configure([
        {"job_name": "incidentd-sidecar", "static_configs": [{"targets": [f"127.0.0.1:{ports[0]}"]}]},
        {"job_name": "model-server", "static_configs": [{"targets": [f"127.0.0.1:{ports[1]}"]}]},
    ])
    mine = f'model_error_ratio{{model=~"{MODEL}|we.ird.*"}}'
    assert wait_until(lambda: len(prometheus.query(mine)) == 4, 60), prometheus.query(mine)
    # the reads below expect at least two points of each series
    assert wait_until(lambda: prometheus.samples_of(mine) >= 2, 60), prometheus.query(mine)
    yield prometheus
    prometheus.configure([])
    for s in servers:
        s.shutdown()
        s.server_close()


def test_read_returns_the_exposed_values(two_targets):
    src = PrometheusSource(two_targets.url)
    now = time.time()
    got = src.read("model_error_ratio", {"model": MODEL}, now - 30, now, 1.0)
    assert len(got) == 1                                   # job/instance dropped; the sidecar's wins
    (s,) = got
    assert s.name == "model_error_ratio"
    assert s.labels == (("model", MODEL), ("version", "v1"))
    assert len(s.timestamps) == len(s.values) >= 2
    assert s.values[-1] == pytest.approx(0.25)
    assert now - 30 <= s.timestamps[0] <= s.timestamps[-1] <= now + 1
    odd = src.read("model_error_ratio", {"model": ODD}, now - 30, now, 1.0)
    assert len(odd) == 1 and math.isnan(odd[0].values[-1])
    assert src.read("model_error_ratio", {"model": "absent"}, now - 30, now, 1.0) == []
    # A long window at a fine step is coarsened, not refused.
    assert src.read("model_error_ratio", {"model": MODEL}, now - 86_400 * 2, now, 1.0)
    src.close()


def test_failures_are_source_unavailable(prometheus: PrometheusServer):
    with pytest.raises(SourceUnavailable):
        PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=2).read("up", None, 0, 10, 1)
    with pytest.raises(SourceUnavailable):
        PrometheusSource(prometheus.url).read("not a metric", None, time.time() - 10, time.time(), 1)


def test_service_detection_cycle_runs_on_prometheus(two_targets, tmp_path):
    """`incidentd serve --prometheus URL`: the detection loop reads through PrometheusSource."""
    config = pytest.importorskip("incidentd.config")
    runtime_mod = pytest.importorskip("incidentd.runtime")
    settings = config.Settings(prometheus_url=two_targets.url, database=tmp_path / "incidentd.db")
    rt = runtime_mod.Runtime(settings)
    try:
        # One query per signal for all models (issue 16): a BatchedSource over PrometheusSource.
        assert isinstance(rt.source.inner, PrometheusSource)
        rt.detect_job()
        rt.detect_job()
        assert rt.metrics.errors.labels("detect")._value.get() == 0
        assert rt.metrics.cycles._value.get() == 2
    finally:
        rt.stop()
