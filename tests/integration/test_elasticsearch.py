"""The Elasticsearch sink against a real Elasticsearch: templates, delivery, outage, dead letter."""
from __future__ import annotations

import json
import threading
import time
import uuid

from prometheus_client import CollectorRegistry

from collector.elasticsearch import ElasticsearchSink
from collector.sinks import EventType, make_event

from .conftest import ElasticsearchServer, wait_until

OUTAGE_SECONDS = 30.0


def _sink(es: ElasticsearchServer, tmp_path, prefix: str, **kw) -> ElasticsearchSink:
    return ElasticsearchSink(es.url, index_prefix=prefix, spool_dir=tmp_path / "spool",
                             dead_letter_path=tmp_path / "dead-letter.jsonl", registry=kw.pop("registry", None),
                             flush_interval=0.2, backoff_initial=0.2, backoff_max=2.0, request_timeout=5.0, **kw)


def _event_ids(client, index: str) -> list[str]:
    client.indices.refresh(index=index)
    ids: list[str] = []
    resp = client.search(index=index, size=1000, sort=["_doc"], source=["event.id"], scroll="1m")
    try:
        while resp["hits"]["hits"]:
            ids.extend(h["_source"]["event"]["id"] for h in resp["hits"]["hits"])
            resp = client.scroll(scroll_id=resp["_scroll_id"], scroll="1m")
    finally:
        client.clear_scroll(scroll_id=resp["_scroll_id"])
    return ids


def test_server_version_matches_client_major(es_client, elasticsearch):
    """The client's major version must match the server's (a 9.x client is rejected by an 8.x server)."""
    import elasticsearch as es_module

    nodes = es_client.nodes.info()["nodes"]
    server = next(iter(nodes.values()))["version"]
    assert server == elasticsearch.version or elasticsearch.version == "?"
    assert server.split(".")[0] == es_module.__versionstr__.split(".")[0]


def test_templates_installed_with_explicit_mappings(elasticsearch, es_client, tmp_path):
    sink = _sink(elasticsearch, tmp_path, "tpl", start=False)
    sink.ensure_templates()
    names = {t["name"] for t in es_client.indices.get_index_template(name="tpl-*")["index_templates"]}
    assert names == {"tpl-events", "tpl-anomalies", "tpl-incidents", "tpl-actions"}
    assert sink.data_streams is True
    sink.emit([make_event(EventType.VERSION_CHANGE, model="digits", version="v2", at=time.time())])
    assert sink.flush(30)
    mapping = es_client.indices.get_mapping(index="tpl-events")
    props = next(iter(mapping.values()))["mappings"]
    assert props["dynamic"] == "strict"
    assert props["properties"]["event"]["properties"]["action"]["type"] == "keyword"
    backing = next(iter(mapping))
    assert backing.startswith(".ds-tpl-events-")          # a data stream backs the events
    sink.close()


def test_events_anomalies_incidents_actions_searchable(elasticsearch, es_client, tmp_path):
    reg = CollectorRegistry()
    sink = _sink(elasticsearch, tmp_path, "docs", registry=reg)
    now = time.time()
    events = [make_event(EventType.SCRAPE_FAILED, model="digits", version="v1", at=now + i, reason="timeout")
              for i in range(50)]
    sink.emit(events)
    sink.emit(events[:10])                                   # a retried batch: no duplicates
    sink.index_anomalies([{"detector": "page_hinkley", "series": "s", "signal": "model_latency_seconds",
                           "labels": [["model", "digits"]], "window_start": now - 60, "window_end": now,
                           "onset": now - 5, "score": 0.97, "direction": "up", "value": 0.8}])
    sink.mirror_incident({"id": "inc-1", "status": "open", "severity": "critical", "title": "latency up",
                          "model": "digits", "created_at": now, "updated_at": now})
    sink.mirror_incident({"id": "inc-1", "status": "resolved", "severity": "critical", "title": "latency up",
                          "model": "digits", "created_at": now, "updated_at": now + 10, "resolved_at": now + 10,
                          "timeline": [{"at": now, "kind": "opened", "text": "x" * 40_000},
                                       {"at": now + 10, "kind": "resolved", "data": {"by": "alert"}}],
                          "evidence_ids": ["a", "b"], "escalated": False})
    sink.mirror_incident({"id": "inc-1", "status": "open", "severity": "critical", "title": "latency up",
                          "model": "digits", "created_at": now, "updated_at": now + 1})  # stale: ignored
    sink.mirror_action({"id": "act-1", "incident_id": "inc-1", "kind": "rollback", "mode": "auto",
                        "status": "verified", "outcome": "success", "created_at": now, "updated_at": now})
    assert sink.flush(60)
    es_client.indices.refresh(index="docs-*")
    assert es_client.count(index="docs-events")["count"] == 50
    assert reg.get_sample_value("incidentd_es_documents_duplicate_total", {"kind": "events"}) == 10
    hit = es_client.search(index="docs-anomalies", query={"term": {"incidentd.anomaly.detector": "page_hinkley"}})
    assert hit["hits"]["total"]["value"] == 1
    inc = es_client.get(index="docs-incidents", id="inc-1")["_source"]
    assert inc["incidentd"]["incident"]["status"] == "resolved"
    assert inc["incidentd"]["details"]["timeline"][1]["kind"] == "resolved"
    found = es_client.search(index="docs-incidents", query={"term": {"incidentd.details.escalated": "false"}})
    assert found["hits"]["total"]["value"] == 1
    found = es_client.search(index="docs-actions", query={"term": {"incidentd.action.incident_id": "inc-1"}})
    assert found["hits"]["hits"][0]["_source"]["event"]["outcome"] == "success"
    sink.close()


def test_mapping_error_goes_to_dead_letter_and_is_not_retried(elasticsearch, es_client, tmp_path):
    reg = CollectorRegistry()
    sink = _sink(elasticsearch, tmp_path, "dlq", registry=reg)
    good = make_event(EventType.VERSION_CHANGE, model="m", version="v1", at=time.time())
    bad = make_event(EventType.VERSION_CHANGE, model="m", version="v1", at=time.time())
    bad["@timestamp"] = "not a date"
    sink.emit([good, bad])
    assert sink.flush(30)
    es_client.indices.refresh(index="dlq-events")
    assert es_client.count(index="dlq-events")["count"] == 1
    lines = [json.loads(x) for x in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == 400 and lines[0]["doc"]["@timestamp"] == "not a date"
    assert reg.get_sample_value("incidentd_es_dead_letter_documents_total", {"kind": "events"}) == 1
    sink.close()


def test_outage_under_load_loses_and_duplicates_nothing(elasticsearch, es_client, tmp_path):
    """Continuous load for the whole of a >= 30 s Elasticsearch outage, then recovery."""
    reg = CollectorRegistry()
    sink = _sink(elasticsearch, tmp_path, "outage", registry=reg)
    sink.ensure_templates()
    sent: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            batch = [make_event(EventType.SCRAPE_FAILED, model="digits", version="v1", at=time.time(), seq=i + j,
                                run=uuid.uuid4().hex) for j in range(5)]
            sink.emit(batch)
            sent.extend(e["event_id"] for e in batch)
            i += 5
            stop.wait(0.02)                   # paces the load; ends at once when the test stops it

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        assert wait_until(lambda: len(sent) >= 100, 60), "no load before the outage"
        elasticsearch.stop()
        sent_before_outage = len(sent)
        # the scenario: Elasticsearch stays down this long under load (a hold, not a wait for a result)
        stop.wait(OUTAGE_SECONDS)
        assert sink.spool.pending() > 0
        assert len(sent) > sent_before_outage + 100               # load kept coming during the outage
        elasticsearch.start()
        sent_at_recovery = len(sent)
        assert wait_until(lambda: len(sent) >= sent_at_recovery + 100, 60), "no load after the recovery"
    finally:
        stop.set()
        loader.join(10)
    assert sink.flush(120), f"spool not drained: {sink.spool.pending()} pending"
    ids = _event_ids(es_client, "outage-events")
    assert len(ids) == len(sent), f"sent {len(sent)}, stored {len(ids)}"
    assert len(set(ids)) == len(ids), "duplicates stored"
    assert set(ids) == set(sent), "lost events"
    assert reg.get_sample_value("incidentd_es_spool_dropped_total") == 0
    assert reg.get_sample_value("incidentd_es_bulk_retries_total") > 0
    sink.close()


def test_sink_restart_resumes_from_spool(elasticsearch, es_client, tmp_path):
    """A sink closed with undelivered documents delivers them after it is reopened."""
    sink = ElasticsearchSink("http://127.0.0.1:9", index_prefix="resume", spool_dir=tmp_path / "spool",
                             start=False, request_timeout=1.0)
    events = [make_event(EventType.PROCESS_RESTART, model="m", version="v1", at=time.time()) for _ in range(20)]
    sink.emit(events)
    sink.close()
    sink = _sink(elasticsearch, tmp_path, "resume")
    assert sink.flush(30)
    assert sorted(_event_ids(es_client, "resume-events")) == sorted(e["event_id"] for e in events)
    sink.close()
