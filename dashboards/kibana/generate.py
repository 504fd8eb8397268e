"""Generate incidentd's Kibana saved objects (dashboards/kibana/incidentd.ndjson).

    python dashboards/kibana/generate.py           # rewrite incidentd.ndjson
    python dashboards/kibana/generate.py --check   # exit 1 if the committed file is stale

Import with Kibana's saved objects API (docker compose does it in the kibana-setup service):

    curl -X POST 'http://localhost:5601/api/saved_objects/_import?overwrite=true' \\
         -H 'kbn-xsrf: true' --form file=@dashboards/kibana/incidentd.ndjson

Objects: one data view per incidentd index (events, anomalies, incidents, actions), a saved
search per data view, and the "incidentd: incidents and actions" dashboard. Every field named
here must exist in the index templates of collector/elasticsearch.py (checked against a real
Elasticsearch by tests/integration/test_dashboards.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "incidentd.ndjson"
PREFIX = "incidentd"

# kind -> (title, saved-search columns, KQL query)
VIEWS: dict[str, tuple[str, list[str], str]] = {
    "events": ("incidentd events",
               ["event.action", "service.name", "service.version", "event.provider", "message"], ""),
    "anomalies": ("incidentd anomalies",
                  ["service.name", "incidentd.anomaly.signal", "incidentd.anomaly.detector",
                   "incidentd.anomaly.score", "incidentd.anomaly.direction", "incidentd.anomaly.value"],
                  "incidentd.anomaly.score >= 0.5"),
    "incidents": ("incidentd incidents",
                  ["incidentd.incident.id", "incidentd.incident.status", "incidentd.incident.severity",
                   "service.name", "incidentd.incident.fault_domain", "incidentd.incident.root_cause",
                   "incidentd.incident.confidence", "incidentd.incident.title", "incidentd.incident.resolved"],
                  ""),
    "actions": ("incidentd actions",
                ["incidentd.action.incident_id", "incidentd.action.kind", "incidentd.action.target",
                 "incidentd.action.mode", "incidentd.action.status", "incidentd.action.verdict", "event.outcome"],
                ""),
}

CORE_VERSION = "8.19.0"


def data_view_id(kind: str) -> str:
    return f"{PREFIX}-{kind}-data-view"


def search_id(kind: str) -> str:
    return f"{PREFIX}-{kind}-search"


def data_view(kind: str) -> dict[str, Any]:
    return {
        "type": "index-pattern", "id": data_view_id(kind), "coreMigrationVersion": CORE_VERSION,
        "typeMigrationVersion": "8.0.0", "managed": False, "references": [],
        "attributes": {"title": f"{PREFIX}-{kind}*", "name": f"incidentd {kind}", "timeFieldName": "@timestamp",
                       "allowHidden": False, "fieldFormatMap": "{}", "runtimeFieldMap": "{}",
                       "sourceFilters": "[]"},
    }


def saved_search(kind: str) -> dict[str, Any]:
    title, columns, query = VIEWS[kind]
    source = {"query": {"query": query, "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {
        "type": "search", "id": search_id(kind), "coreMigrationVersion": CORE_VERSION,
        "typeMigrationVersion": "10.1.0", "managed": False,
        "attributes": {"title": title, "description": f"Latest {kind} written by incidentd.",
                       "columns": columns, "sort": [["@timestamp", "desc"]], "grid": {}, "hideChart": False,
                       "isTextBasedQuery": False,
                       "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source, sort_keys=True)}},
        "references": [{"id": data_view_id(kind), "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                        "type": "index-pattern"}],
    }


def dashboard() -> dict[str, Any]:
    layout = [("incidents", 0, 0, 48, 15), ("actions", 0, 15, 48, 15), ("anomalies", 0, 30, 24, 15),
              ("events", 24, 30, 24, 15)]
    panels, refs = [], []
    for i, (kind, x, y, w, h) in enumerate(layout):
        ref = f"panel_{i}"
        panels.append({"type": "search", "panelIndex": str(i + 1), "panelRefName": ref,
                       "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i + 1)},
                       "embeddableConfig": {"enhancements": {}}})
        refs.append({"id": search_id(kind), "name": f"{i + 1}:{ref}", "type": "search"})
    return {
        "type": "dashboard", "id": f"{PREFIX}-incidents-dashboard", "coreMigrationVersion": CORE_VERSION,
        "typeMigrationVersion": "10.2.0", "managed": False,
        "attributes": {
            "title": "incidentd: incidents and actions",
            "description": "Incidents opened by incidentd, the actions taken on them, and the anomalies and "
                           "events behind them.",
            "timeRestore": True, "timeFrom": "now-24h", "timeTo": "now", "refreshInterval": {"pause": False,
                                                                                           "value": 30000},
            "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                       "syncTooltips": False, "hidePanelTitles": False}, sort_keys=True),
            "panelsJSON": json.dumps(panels, sort_keys=True),
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                {"query": {"query": "", "language": "kuery"}, "filter": []}, sort_keys=True)},
        },
        "references": refs,
    }


def objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [data_view(k) for k in VIEWS]
    out += [saved_search(k) for k in VIEWS]
    out.append(dashboard())
    return out


def render() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects())


def referenced_fields() -> dict[str, set[str]]:
    """Every field each data view's objects reference, by index pattern (for the mapping test)."""
    import re

    out: dict[str, set[str]] = {}
    for kind, (_, columns, query) in VIEWS.items():
        fields = {"@timestamp", *columns}
        fields |= set(re.findall(r"([A-Za-z_@][\w.@]*)\s*(?::|>=|<=|>|<)", query))
        out[f"{PREFIX}-{kind}"] = fields
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("stale: dashboards/kibana/incidentd.ndjson; run python dashboards/kibana/generate.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
