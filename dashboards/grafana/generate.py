"""Generate incidentd's Grafana dashboards as code (grafana-foundation-sdk).

    python dashboards/grafana/generate.py            # rewrite dashboards/grafana/*.json
    python dashboards/grafana/generate.py --check    # exit 1 if the committed JSON is stale

The JSON files beside this script are build outputs: edit this file, never the JSON
(tests/integration/test_dashboards.py checks they are equal). Provisioning files live in
provisioning/ and point Grafana at the datasources with the fixed uids used below.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import elasticsearch as es
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh

HERE = Path(__file__).resolve().parent

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="incidentd-prometheus")
ES_INCIDENTS = DataSourceRef(type_val="elasticsearch", uid="incidentd-es-incidents")
ES_ACTIONS = DataSourceRef(type_val="elasticsearch", uid="incidentd-es-actions")

SEL = 'model=~"$model"'


def _q(expr: str, legend: str, ref: str = "A") -> prom.Dataquery:
    return prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def ts_panel(title: str, unit: str, queries: list[tuple[str, str]], *, width: int = 8, description: str = "",
             min_val: float | None = None, max_val: float | None = None) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
         .height(8).span(width))
    for i, (expr, legend) in enumerate(queries):
        p = p.with_target(_q(expr, legend, chr(ord("A") + i)))
    if min_val is not None:
        p = p.min(min_val)
    if max_val is not None:
        p = p.max(max_val)
    return p


def stat_panel(title: str, unit: str, expr: str, legend: str, *, width: int = 4, description: str = "") -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
            .height(4).span(width).with_target(_q(expr, legend)))


def model_variable() -> dash.QueryVariable:
    return (dash.QueryVariable("model").label("Model").datasource(PROMETHEUS)
            .query({"query": "label_values(model_up, model)", "refId": "model"})
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).include_all(True).all_value(".*").multi(True))


def model_overview() -> dict[str, Any]:
    d = (dash.Dashboard("incidentd / Model overview").uid("incidentd-model-overview")
         .tags(["incidentd", "model"]).refresh("10s").time("now-1h", "now").timezone("utc")
         .tooltip(DashboardCursorSync.CROSSHAIR).editable()
         .description("Signals of the watched models (docs/contracts.md), as exported by the incidentd sidecar.")
         .with_variable(model_variable()))

    d = d.with_row(dash.Row("Traffic and errors"))
    d = d.with_panel(stat_panel("Model up", "none", f"min by (model) (model_up{{{SEL}}})", "{{model}}",
                                description="1 when the sidecar's last scrape of the model server succeeded."))
    d = d.with_panel(stat_panel("Non-finite weights", "none", f"max by (model, version) (model_weights_nonfinite{{{SEL}}})",
                                "{{model}} {{version}}"))
    d = d.with_panel(stat_panel("Drifted features", "none", f"max by (model, version) (model_drifted_features{{{SEL}}})",
                                "{{model}} {{version}}", description="After Benjamini-Hochberg correction."))
    d = d.with_panel(stat_panel("Accuracy", "percentunit", f"avg by (model, version) (model_accuracy_ratio{{{SEL}}})",
                                "{{model}} {{version}}", width=6))
    d = d.with_panel(stat_panel("Throughput", "reqps",
                                f"sum by (model) (model_throughput_requests_per_second{{{SEL}}})", "{{model}}",
                                width=6))
    d = d.with_panel(ts_panel("Traffic", "reqps", [
        (f"sum by (model, version) (model_throughput_requests_per_second{{{SEL}}})", "{{model}} {{version}}"),
    ]))
    d = d.with_panel(ts_panel("Latency quantiles", "s", [
        (f"max by (model, version, quantile) (model_latency_seconds{{{SEL}}})", "p{{quantile}} {{model}} {{version}}"),
    ], description="Quantiles over the sidecar's recent window."))
    d = d.with_panel(ts_panel("Error ratio", "percentunit", [
        (f"max by (model, version) (model_error_ratio{{{SEL}}})", "{{model}} {{version}}"),
    ], min_val=0))

    d = d.with_row(dash.Row("Quality and drift"))
    d = d.with_panel(ts_panel("Accuracy (delayed labels)", "percentunit", [
        (f"avg by (model, version) (model_accuracy_ratio{{{SEL}}})", "{{model}} {{version}}"),
    ], min_val=0, max_val=1))
    d = d.with_panel(ts_panel("Label lag", "s", [
        (f"max by (model) (model_label_lag_seconds{{{SEL}}})", "{{model}}"),
    ]))
    d = d.with_panel(ts_panel("Prediction drift (PSI)", "none", [
        (f'max by (model, version) (model_prediction_drift_statistic{{{SEL},test="psi"}})', "{{model}} {{version}}"),
    ]))
    d = d.with_panel(ts_panel("Feature drift: KS statistic per feature", "none", [
        (f'max by (feature) (model_feature_drift_statistic{{{SEL},test="ks"}})', "{{feature}}"),
    ], width=12))
    d = d.with_panel(ts_panel("Feature drift: KS p-value per feature", "none", [
        (f'min by (feature) (model_feature_drift_p_value{{{SEL},test="ks"}})', "{{feature}}"),
    ], width=12, min_val=0, max_val=1))
    d = d.with_panel(ts_panel("Feature drift: PSI per feature", "none", [
        (f'max by (feature) (model_feature_drift_statistic{{{SEL},test="psi"}})', "{{feature}}"),
    ], width=12))
    d = d.with_panel(ts_panel("Input drift decision and missing inputs", "none", [
        (f"max by (model) (model_input_drift_detected{{{SEL}}})", "drift detected {{model}}"),
        (f"max by (model) (model_input_missing_ratio{{{SEL}}})", "missing ratio {{model}}"),
    ], width=12))

    d = d.with_row(dash.Row("Non-finite outputs"))
    d = d.with_panel(ts_panel("Non-finite output ratio", "percentunit", [
        (f"max by (model, version) (model_nonfinite_output_ratio{{{SEL}}})", "{{model}} {{version}}"),
    ], width=12, min_val=0))
    d = d.with_panel(ts_panel("Non-finite outputs per second", "ops", [
        (f'sum by (model, version) (rate(model_nonfinite_outputs_total{{{SEL},job="incidentd-sidecar"}}[$__rate_interval]))',
         "{{model}} {{version}}"),
    ], width=12, min_val=0))

    d = d.with_row(dash.Row("Hardware"))
    d = d.with_panel(ts_panel("CPU", "percentunit", [
        (f"max by (model) (model_host_cpu_usage_ratio{{{SEL}}})", "host {{model}}"),
        (f"max by (model) (model_process_cpu_usage_ratio{{{SEL}}})", "model server {{model}}"),
    ], min_val=0))
    d = d.with_panel(ts_panel("Memory", "percentunit", [
        (f"max by (model) (model_host_memory_usage_ratio{{{SEL}}})", "host {{model}}"),
    ], min_val=0, max_val=1))
    d = d.with_panel(ts_panel("Model server resident memory", "bytes", [
        (f"max by (model) (model_process_resident_memory_bytes{{{SEL}}})", "{{model}}"),
    ]))
    d = d.with_panel(ts_panel("GPU utilization", "percentunit", [
        (f"max by (model, gpu) (model_gpu_utilization_ratio{{{SEL}}})", "gpu {{gpu}}"),
    ], width=6, min_val=0, max_val=1))
    d = d.with_panel(ts_panel("GPU memory used", "bytes", [
        (f"max by (model, gpu) (model_gpu_memory_used_bytes{{{SEL}}})", "gpu {{gpu}}"),
    ], width=6))
    d = d.with_panel(ts_panel("GPU temperature", "celsius", [
        (f"max by (model, gpu) (model_gpu_temperature_celsius{{{SEL}}})", "gpu {{gpu}}"),
    ], width=6))
    d = d.with_panel(ts_panel("GPU throttled and errors", "none", [
        (f"max by (model, gpu) (model_gpu_throttled{{{SEL}}})", "throttled gpu {{gpu}}"),
        (f"sum by (model, gpu) (model_gpu_ecc_errors_total{{{SEL}}})", "ECC errors gpu {{gpu}}"),
        (f"sum by (model, gpu) (model_gpu_xid_errors_total{{{SEL}}})", "XID errors gpu {{gpu}}"),
    ], width=6))
    return _finish(d, incidents_annotation=True)


def incidents_view() -> dict[str, Any]:
    d = (dash.Dashboard("incidentd / Incidents").uid("incidentd-incidents")
         .tags(["incidentd", "incidents"]).refresh("30s").time("now-24h", "now").timezone("utc").editable()
         .description("Model alerts from Prometheus and the incidents and actions incidentd mirrors to Elasticsearch.")
         .with_variable(model_variable()))
    d = d.with_panel(stat_panel("Firing model alerts", "none",
                                f'count(ALERTS{{alertstate="firing",component="model",{SEL}}}) or vector(0)',
                                "firing", width=6))
    d = d.with_panel(stat_panel("Pending model alerts", "none",
                                f'count(ALERTS{{alertstate="pending",component="model",{SEL}}}) or vector(0)',
                                "pending", width=6))
    d = d.with_panel(stat_panel("Models up", "none", f"sum(model_up{{{SEL}}})", "up", width=6))
    d = d.with_panel(stat_panel("Sidecar scrape errors (1h)", "none",
                                "sum(increase(incidentd_sidecar_scrape_errors_total[1h])) or vector(0)", "errors",
                                width=6))
    d = d.with_panel(ts_panel("Model alerts by name", "none", [
        (f'count by (alertname) (ALERTS{{alertstate="firing",component="model",{SEL}}}) or vector(0)',
         "{{alertname}}"),
    ], width=24))
    incidents = (table.Panel().title("Incidents").datasource(ES_INCIDENTS).height(10).span(24)
                 .description("incidentd-incidents in Elasticsearch: one document per incident, latest state.")
                 .with_target(es.Dataquery().ref_id("A").query("*").time_field("@timestamp")
                              .metrics([es.RawData().id("1").settings(es.ElasticsearchRawDataSettings().size("500"))])))
    actions = (table.Panel().title("Actions").datasource(ES_ACTIONS).height(10).span(24)
               .description("incidentd-actions in Elasticsearch: remediation actions and their verification.")
               .with_target(es.Dataquery().ref_id("A").query("*").time_field("@timestamp")
                            .metrics([es.RawData().id("1").settings(es.ElasticsearchRawDataSettings().size("500"))])))
    d = d.with_panel(incidents).with_panel(actions)
    return _finish(d, incidents_annotation=True)


def _finish(d: dash.Dashboard, *, incidents_annotation: bool) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder, sort_keys=True))
    annotations = out.setdefault("annotations", {}).setdefault("list", [])
    annotations.append({
        "name": "Model alerts", "enable": True, "iconColor": "orange", "datasource": PROMETHEUS.to_json(),
        "expr": f'ALERTS{{alertstate="firing",component="model",{SEL}}}', "step": "30s",
        "titleFormat": "{{alertname}}", "textFormat": "{{model}} {{version}} ({{severity}}, {{domain}})",
        "useValueForTime": False,
    })
    if incidents_annotation:
        annotations.append({
            "name": "Incidents", "enable": True, "iconColor": "red", "datasource": ES_INCIDENTS.to_json(),
            "query": "service.name:$model OR NOT _exists_:service.name", "timeField": "@timestamp",
            "timeEndField": "incidentd.incident.resolved", "textField": "message",
            "tagsField": "incidentd.incident.status",
        })
        annotations.append({
            "name": "Actions", "enable": True, "iconColor": "blue", "datasource": ES_ACTIONS.to_json(),
            "query": "*", "timeField": "@timestamp", "textField": "incidentd.action.kind",
            "tagsField": "incidentd.action.status",
        })
    return out


DASHBOARDS = {"model-overview.json": model_overview, "incidents.json": incidents_view}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2, sort_keys=True) + "\n" for name, fn in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python dashboards/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
