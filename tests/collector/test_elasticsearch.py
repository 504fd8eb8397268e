"""Unit tests of the Elasticsearch sink's spool and documents (no server; see tests/integration/)."""
from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from collector.elasticsearch import ElasticsearchSink
from collector.es_documents import DocKind, document_id, index_templates, mappings_for, to_document
from collector.sinks import EventSink, EventType, make_event
from collector.spool import Spool, SpoolPolicy


def test_spool_round_trip_and_commit(tmp_path):
    spool = Spool(tmp_path)
    assert spool.append([b"one", b"two", b"three"]) == 3
    recs = spool.read(2)
    assert [r.payload for r in recs] == [b"one", b"two"]
    spool.commit(recs[-1])
    assert [r.payload for r in spool.read(10)] == [b"three"]
    spool.close()
    # A new process sees the committed cursor.
    again = Spool(tmp_path)
    assert [r.payload for r in again.read(10)] == [b"three"]
    assert again.pending() == 1


def test_spool_rotates_and_deletes_delivered_segments(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for i in range(20):
        spool.append([f"record-{i:03d}".encode()])
    assert len(list(tmp_path.glob("seg-*.log"))) > 3
    recs = spool.read(100)
    assert [r.payload for r in recs] == [f"record-{i:03d}".encode() for i in range(20)]
    spool.commit(recs[-1])
    assert spool.pending() == 0
    assert spool.is_empty()
    assert len(list(tmp_path.glob("seg-*.log"))) == 1   # only the active segment is kept


def test_corrupt_record_is_skipped_and_counted(tmp_path):
    spool = Spool(tmp_path)
    spool.append([b"good-1", b"bad-2", b"good-3"])
    spool.close()
    seg = next(tmp_path.glob("seg-*.log"))
    data = bytearray(seg.read_bytes())
    i = data.index(b"bad-2")
    data[i] ^= 0xFF                      # flip a payload byte: the CRC no longer matches
    seg.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    recs = spool.read(10)
    assert [r.payload for r in recs] == [b"good-1", b"", b"good-3"]
    assert spool.corrupt == 1


def test_damaged_framing_ends_segment_without_crashing(tmp_path):
    spool = Spool(tmp_path)
    spool.append([b"good-1"])
    spool.close()
    seg = next(tmp_path.glob("seg-*.log"))
    with open(seg, "ab") as fh:
        fh.write(b"\x00garbage that is not a record header at all")
    spool = Spool(tmp_path)
    recs = spool.read(10)
    assert [r.payload for r in recs] == [b"good-1", b""]
    assert spool.corrupt == 1
    spool.commit(recs[-1])
    assert spool.is_empty()
    spool.append([b"after"])
    assert [r.payload for r in spool.read(10)] == [b"after"]


def test_torn_tail_is_not_corruption(tmp_path):
    spool = Spool(tmp_path)
    spool.append([b"good-1", b"good-2"])
    spool.close()
    seg = next(tmp_path.glob("seg-*.log"))
    seg.write_bytes(seg.read_bytes()[:-3])   # a crash mid-write
    spool = Spool(tmp_path)
    spool.append([b"good-3"])                     # appends go to a fresh segment, after the torn one
    assert [r.payload for r in spool.read(10) if r.payload] == [b"good-1", b"good-3"]
    assert spool.corrupt == 0


def test_cap_drop_oldest_keeps_newest_and_counts(tmp_path):
    spool = Spool(tmp_path, max_bytes=4096, segment_bytes=1024, policy=SpoolPolicy.DROP_OLDEST)
    payloads = [f"{i:05d}".encode() * 20 for i in range(200)]     # 100 bytes + 12 header each
    for p in payloads:
        assert spool.append([p]) == 1
    assert spool.size_bytes <= 4096
    kept = [r.payload for r in spool.read(1000)]
    assert kept == payloads[-len(kept):]              # the newest survive, in order
    assert spool.dropped == len(payloads) - len(kept) > 0


def test_cap_drop_newest_refuses_and_counts(tmp_path):
    spool = Spool(tmp_path, max_bytes=4096, segment_bytes=1024, policy=SpoolPolicy.DROP_NEWEST)
    payloads = [f"{i:05d}".encode() * 20 for i in range(200)]
    stored = sum(spool.append([p]) for p in payloads)
    kept = [r.payload for r in spool.read(1000)]
    assert kept == payloads[:stored]                   # the oldest survive
    assert spool.dropped == len(payloads) - stored > 0


def test_sink_counts_dropped_in_prometheus(tmp_path):
    reg = CollectorRegistry()
    sink = ElasticsearchSink("http://127.0.0.1:9", spool_dir=tmp_path, spool_max_bytes=8192, registry=reg,
                             start=False, fsync=False)
    assert isinstance(sink, EventSink)
    for i in range(200):
        sink.emit([make_event(EventType.SCRAPE_FAILED, model="m", version="v1", at=float(i), reason="x" * 50)])
    dropped = reg.get_sample_value("incidentd_es_spool_dropped_total")
    assert dropped is not None and dropped > 0
    assert dropped + sink.spool.pending() == 200
    sink.close()


def test_event_document_is_ecs_and_id_is_deterministic():
    ev = make_event(EventType.VERSION_CHANGE, model="digits", version="v2", at=1_700_000_000.0, previous="v1")
    doc = to_document(DocKind.EVENTS, ev)
    assert doc["event"]["id"] == ev["event_id"]
    assert doc["event"]["action"] == "version_change"
    assert doc["service"] == {"name": "digits", "version": "v2"}
    assert doc["incidentd"]["details"] == {"previous": "v1"}
    assert document_id(DocKind.EVENTS, doc) == document_id(DocKind.EVENTS, to_document(DocKind.EVENTS, dict(ev)))
    other = make_event(EventType.VERSION_CHANGE, model="digits", version="v2", at=1_700_000_000.0, previous="v1")
    assert document_id(DocKind.EVENTS, doc) != document_id(DocKind.EVENTS, to_document(DocKind.EVENTS, other))


def _mapped_paths(props: dict, prefix: str = "") -> set[str]:
    out = set()
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out |= _mapped_paths(spec["properties"], path + ".")
        else:
            out.add(path)
    return out


def _doc_paths(doc: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in doc.items():
        if isinstance(v, dict) and k not in ("details", "labels"):
            out |= _doc_paths(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


@pytest.mark.parametrize("kind, raw", [
    (DocKind.EVENTS, make_event(EventType.DRIFT_CHANGED, model="m", version="v1", at=1.0, features=["f1"])),
    (DocKind.ANOMALIES, {"detector": "page_hinkley", "series": "model_latency_seconds{model=m}",
                         "signal": "model_latency_seconds", "labels": (("model", "m"), ("version", "v1")),
                         "window_start": 0.0, "window_end": 60.0, "onset": 30.0, "score": 0.9, "direction": "up",
                         "value": 0.4, "statistic": 12.0, "p_value": None, "extra": {"mean": 0.1}}),
    (DocKind.INCIDENTS, {"id": "inc-1", "status": "open", "severity": "critical", "dedup_key": "k",
                         "title": "latency", "model": "m", "version": "v1", "created_at": 1.0, "updated_at": 2.0,
                         "hypotheses": [{"domain": "hardware", "root_cause": "hardware.gpu_thermal",
                                         "confidence": 0.8}]}),
    (DocKind.ACTIONS, {"id": "act-1", "incident_id": "inc-1", "kind": "rollback", "target": "m", "mode": "auto",
                       "status": "verified", "outcome": "success", "dry_run": False, "created_at": 3.0,
                       "params": {"to": "v1"}}),
])
def test_every_document_field_is_mapped(kind, raw):
    doc = to_document(kind, raw)
    mapped = _mapped_paths(mappings_for(kind)["properties"])
    assert _doc_paths(doc) <= mapped, _doc_paths(doc) - mapped
    json.dumps(doc)


def test_templates_use_data_streams_with_lifecycle_for_append_only_kinds():
    tpl = index_templates("incidentd")
    assert set(tpl) == {"incidentd-events", "incidentd-anomalies", "incidentd-incidents", "incidentd-actions"}
    assert tpl["incidentd-events"]["data_stream"] == {}
    assert tpl["incidentd-events"]["template"]["lifecycle"] == {"data_retention": "30d"}
    assert "data_stream" not in tpl["incidentd-incidents"]
    plain = index_templates("incidentd", data_streams=False)
    assert all("data_stream" not in t for t in plain.values())


def test_unreachable_server_keeps_everything_in_the_spool(tmp_path):
    reg = CollectorRegistry()
    sink = ElasticsearchSink("http://127.0.0.1:9", spool_dir=tmp_path, registry=reg, start=False, fsync=False,
                             backoff_initial=0.05, backoff_max=0.1, request_timeout=0.5)
    sink.emit([make_event(EventType.SCRAPE_FAILED, model="m", version="v1", at=float(i)) for i in range(7)])
    assert sink.flush(timeout=1.0) is False
    assert sink.spool.pending() == 7
    assert reg.get_sample_value("incidentd_es_bulk_retries_total") > 0
    assert reg.get_sample_value("incidentd_es_spool_dropped_total") == 0
    sink.close()


def test_real_incident_and_action_records_map_onto_the_mapping():
    from dataclasses import replace

    from collector.es_documents import state_version
    from diagnosis.types import FaultDomain, Hypothesis, Incident, IncidentStatus, Severity
    from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus, Plan

    hyp = Hypothesis(domain=next(iter(FaultDomain)), root_cause="model.nonfinite_weights", confidence=0.9,
                     recommended_action="clamp", explanation="NaN weights")
    inc = Incident(id="inc-9", model="digits", dedup_key="digits:model", status=IncidentStatus.OPEN,
                   severity=next(iter(Severity)), opened_at=100.0, updated_at=101.0, title="NaN weights",
                   hypotheses=[hyp])
    doc = to_document(DocKind.INCIDENTS, inc.to_dict())
    assert _doc_paths(doc) <= _mapped_paths(mappings_for(DocKind.INCIDENTS)["properties"])
    assert doc["incidentd"]["incident"]["root_cause"] == "model.nonfinite_weights"
    assert doc["incidentd"]["details"]["hypotheses"][0]["confidence"] == 0.9
    assert document_id(DocKind.INCIDENTS, doc) == "inc-9"

    act = ActionRecord(id="act-9", incident_id="inc-9", model="digits", kind=next(iter(ActionKind)),
                       mode=next(iter(ActionMode)), status=next(iter(ActionStatus)), reason="rule x",
                       idempotency_key="k", created_at=100.0,
                       plan=Plan(next(iter(ActionKind)), "digits", {"a": 1}, "clamp digits"))
    first = state_version(act.to_dict())
    act = replace(act, executed_at=105.0).logged(105.0, "executed")
    later = state_version(act.to_dict())
    assert first is not None and later is not None and later > first
    doc = to_document(DocKind.ACTIONS, act.to_dict())
    assert _doc_paths(doc) <= _mapped_paths(mappings_for(DocKind.ACTIONS)["properties"])
    assert doc["message"] == "rule x"
    json.dumps(doc)
