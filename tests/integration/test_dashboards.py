"""Grafana and Kibana objects: generated as code, and every query/field valid on the real servers."""
from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from collector.elasticsearch import ElasticsearchSink
from collector.sinks import EventType, make_event

from .conftest import DASHBOARDS, PrometheusServer, free_port, wait_until


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.parent.name + "_generate", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def grafana_gen() -> ModuleType:
    pytest.importorskip("grafana_foundation_sdk")
    return _load(DASHBOARDS / "grafana" / "generate.py")


@pytest.fixture(scope="module")
def kibana_gen() -> ModuleType:
    return _load(DASHBOARDS / "kibana" / "generate.py")


def test_grafana_json_is_the_generators_output(grafana_gen):
    for name, text in grafana_gen.render().items():
        path = DASHBOARDS / "grafana" / name
        assert path.exists() and path.read_text() == text, f"{name} is stale: run dashboards/grafana/generate.py"


def test_kibana_ndjson_is_the_generators_output(kibana_gen):
    assert (DASHBOARDS / "kibana" / "incidentd.ndjson").read_text() == kibana_gen.render()


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _prom_exprs(grafana_gen) -> list[tuple[str, str, str]]:
    out = []
    for name, fn in grafana_gen.DASHBOARDS.items():
        for panel in _panels(fn()):
            if panel.get("datasource", {}).get("type") != "prometheus":
                continue
            for t in panel.get("targets", []):
                out.append((name, panel["title"], t["expr"]))
    return out


def _contract_exporter() -> tuple[Any, int]:
    """Every signal of docs/contracts.md with plausible values, as the sidecar exposes them."""
    reg = CollectorRegistry()
    mv = ["model", "version"]
    lab = ("digits", "v1")

    def gauge(name: str, value: float, extra: dict[str, str] | None = None) -> None:
        extra = extra or {}
        g = Gauge(name, name, mv + list(extra), registry=reg)
        g.labels(*lab, *extra.values()).set(value)

    def counter(name: str, value: float, extra: dict[str, str] | None = None) -> None:
        extra = extra or {}
        c = Counter(name, name, mv + list(extra), registry=reg)
        c.labels(*lab, *extra.values()).inc(value)

    gauge("model_up", 1)
    lat = Gauge("model_latency_seconds", "", mv + ["quantile"], registry=reg)
    for q, v in (("0.5", 0.01), ("0.9", 0.02), ("0.99", 0.05)):
        lat.labels(*lab, q).set(v)
    gauge("model_throughput_requests_per_second", 12.5)
    counter("model_requests", 1000)
    counter("model_request_errors", 3)
    gauge("model_error_ratio", 0.003)
    counter("model_predictions_labeled", 500)
    counter("model_predictions_correct", 460)
    gauge("model_accuracy_ratio", 0.92)
    gauge("model_label_lag_seconds", 4.0)
    stat = Gauge("model_feature_drift_statistic", "", mv + ["feature", "test"], registry=reg)
    pval = Gauge("model_feature_drift_p_value", "", mv + ["feature", "test"], registry=reg)
    for f in ("f0", "f1"):
        stat.labels(*lab, f, "ks").set(0.05)
        stat.labels(*lab, f, "psi").set(0.01)
        pval.labels(*lab, f, "ks").set(0.6)
    gauge("model_drifted_features", 0)
    gauge("model_input_drift_detected", 0)
    gauge("model_prediction_drift_statistic", 0.02, {"test": "psi"})
    counter("model_nonfinite_outputs", 0)
    gauge("model_nonfinite_output_ratio", 0)
    gauge("model_input_missing_ratio", 0)
    gauge("model_weights_nonfinite", 0)
    gauge("model_host_cpu_usage_ratio", 0.3)
    gauge("model_host_memory_usage_ratio", 0.4)
    gauge("model_process_cpu_usage_ratio", 0.2)
    gauge("model_process_resident_memory_bytes", 3e8)
    gauge("model_gpu_utilization_ratio", 0.5, {"gpu": "0"})
    gauge("model_gpu_memory_used_bytes", 1e9, {"gpu": "0"})
    gauge("model_gpu_temperature_celsius", 60, {"gpu": "0"})
    gauge("model_gpu_throttled", 0, {"gpu": "0"})
    counter("model_gpu_ecc_errors", 0, {"gpu": "0"})
    counter("model_gpu_xid_errors", 0, {"gpu": "0"})
    Counter("incidentd_sidecar_scrapes", "", registry=reg).inc(10)
    Counter("incidentd_sidecar_scrape_errors", "", registry=reg).inc(0)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
    return server, port


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


def test_every_grafana_panel_query_returns_data(grafana_gen, prometheus: PrometheusServer):
    server, port = _contract_exporter()
    try:
        prometheus.configure([{"job_name": "incidentd-sidecar",
                               "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
        # This exporter's series only: a reload that drops an earlier test's job writes no staleness
        # markers, so that job's series linger (with ever fewer samples in the window) for minutes.
        mine = f'{{job="incidentd-sidecar",instance="127.0.0.1:{port}"}}'
        assert wait_until(lambda: bool(prometheus.query(f'model_up{mine}')), 30)
        # rate()/increase() need two samples of every series
        assert wait_until(lambda: prometheus.samples_of(mine) >= 2, 30)
        exprs = _prom_exprs(grafana_gen)
        assert len(exprs) >= 25
        empty = []
        for dash, title, expr in exprs:
            if not prometheus.query(_grafana_to_promql(expr)):
                empty.append(f"{dash} / {title}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
    finally:
        prometheus.configure([])
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def incidentd_indices(elasticsearch, tmp_path_factory):
    """The real templates and one document of each kind, written by the real sink."""
    sink = ElasticsearchSink(elasticsearch.url, "incidentd", spool_dir=tmp_path_factory.mktemp("spool"),
                             flush_interval=0.2)
    sink.ensure_templates()
    now = time.time()
    sink.emit([make_event(EventType.VERSION_CHANGE, model="digits", version="v2", at=now, previous="v1")])
    sink.index_anomalies([{"detector": "cusum", "series": "s", "signal": "model_error_ratio",
                           "labels": [["model", "digits"]], "window_start": now - 60, "window_end": now,
                           "onset": now, "score": 0.9, "direction": "up", "value": 0.2}])
    sink.mirror_incident({"id": "inc-k", "status": "open", "title": "t", "model": "digits", "created_at": now,
                          "updated_at": now})
    sink.mirror_action({"id": "act-k", "incident_id": "inc-k", "kind": "rollback", "created_at": now,
                        "updated_at": now})
    assert sink.flush(60)
    sink.close()
    return elasticsearch


def _mapped_fields(es_client, index: str) -> set[str]:
    out: set[str] = set()
    for body in es_client.indices.get_mapping(index=index).values():
        def walk(props: dict[str, Any], prefix: str) -> None:
            for name, spec in props.items():
                path = prefix + name
                out.add(path)
                walk(spec.get("properties", {}), path + ".")
                walk(spec.get("fields", {}), path + ".")
        walk(body["mappings"]["properties"], "")
    return out


def test_every_kibana_field_exists_in_the_real_mapping(kibana_gen, incidentd_indices, es_client):
    refs = kibana_gen.referenced_fields()
    assert set(refs) == {"incidentd-events", "incidentd-anomalies", "incidentd-incidents", "incidentd-actions"}
    for index, fields in refs.items():
        mapped = _mapped_fields(es_client, index)
        assert fields <= mapped, f"{index}: fields not in the mapping: {sorted(fields - mapped)}"
    # The data views' patterns match the real indices / data streams.
    es_client.indices.refresh(index="incidentd-*")
    for obj in kibana_gen.objects():
        if obj["type"] == "index-pattern":
            assert es_client.count(index=obj["attributes"]["title"])["count"] >= 1


def test_grafana_elasticsearch_fields_exist_in_the_real_mapping(grafana_gen, incidentd_indices, es_client):
    indices = {"incidentd-es-incidents": "incidentd-incidents", "incidentd-es-actions": "incidentd-actions"}
    for fn in grafana_gen.DASHBOARDS.values():
        for ann in fn()["annotations"]["list"]:
            uid = ann.get("datasource", {}).get("uid")
            if uid not in indices:
                continue
            mapped = _mapped_fields(es_client, indices[uid])
            for key in ("timeField", "timeEndField", "textField", "tagsField"):
                if key in ann:
                    assert ann[key] in mapped, f"{ann['name']}.{key} = {ann[key]} not in {indices[uid]}"
            for field in re.findall(r"([A-Za-z_][\w.]*):", ann.get("query", "")):
                assert field in mapped or field == "_exists_", field
