"""CloudEvents pairing, /feedback parsing and the pending-label book, reference files and metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.adapters.payloads import decode
from collector.capture import CaptureBuffer
from collector.cloudevents import CloudEventSink, EventError, Half
from collector.feedback import LabelBook, parse_feedback, to_labels
from collector.reference_files import ReferenceError, ReferenceFiles, feature_names_from_metadata
from collector.windows import LabelRecord
from detectors.errors import InvalidInput


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ce_headers(eid: str, etype: str, **extra: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": eid, "ce-source": "http://localhost:9081/", "ce-type": etype,
            "content-type": "application/json", **extra}


KSERVE_REQ = "org.kubeflow.serving.inference.request"
KSERVE_RESP = "org.kubeflow.serving.inference.response"


def test_kserve_events_pair_on_ce_id_in_either_order_and_keep_the_endpoint():
    buf = CaptureBuffer()
    sink = CloudEventSink(buf, clock=Clock())
    req = json.dumps({"instances": [[1.0, 2.0]]}).encode()
    resp = json.dumps({"predictions": [1]}).encode()
    assert sink.receive(ce_headers("a", KSERVE_RESP, **{"ce-endpoint": "canary"}), resp) is Half.RESPONSE
    assert buf.drain() == []
    assert sink.receive(ce_headers("a", KSERVE_REQ, **{"ce-inferenceservicename": "iris"}), req) is Half.REQUEST
    (ex,) = buf.drain()
    assert ex.request_id == "a" and ex.endpoint == "canary" and ex.model == "iris"
    assert sink.pairs_by_endpoint == {"canary": 1}
    d = decode(ex)
    assert d.records[0].inputs.tolist() == [1.0, 2.0] and d.records[0].prediction == 1


def test_seldon_events_with_the_seldon_protocol_body():
    buf = CaptureBuffer()
    sink = CloudEventSink(buf, clock=Clock())
    sink.receive(ce_headers("s1", "io.seldon.serving.inference.request", **{"ce-modelid": "clf"}),
                 json.dumps({"data": {"ndarray": [[0.5, 1.5, 2.5]]}}).encode())
    sink.receive(ce_headers("s1", "io.seldon.serving.inference.response"),
                 json.dumps({"data": {"ndarray": [[0.1, 0.7, 0.2]]}}).encode())
    d = decode(buf.drain()[0])
    assert d.model == "clf" and d.records[0].prediction == 1 and d.records[0].inputs.tolist() == [0.5, 1.5, 2.5]


def test_a_half_without_its_pair_is_dropped_after_the_wait_and_counted():
    clock = Clock()
    sink = CloudEventSink(CaptureBuffer(), max_wait_seconds=60, clock=clock)
    sink.receive(ce_headers("lonely", KSERVE_REQ), b'{"instances": [[1]]}')
    clock.now += 61
    sink.receive(ce_headers("other", KSERVE_REQ), b'{"instances": [[1]]}')
    assert sink.unpaired_total == 1 and sink.waiting == 1


def test_events_that_are_not_inference_events_are_rejected():
    sink = CloudEventSink(CaptureBuffer())
    with pytest.raises(EventError, match="not an inference"):
        sink.receive(ce_headers("x", "com.example.something"), b"{}")
    with pytest.raises(EventError, match="not a CloudEvent"):
        sink.receive({"content-type": "application/json"}, b"{}")


def test_feedback_single_batch_and_list_labels():
    assert [lab.request_id for lab in to_labels(parse_feedback({"request_id": "r", "label": 2}), 0)] == ["r"]
    items = parse_feedback({"items": [{"request_id": "a", "label": 1}, {"request_id": "b", "label": [0, 2]}]})
    assert [(lab.request_id, lab.label) for lab in to_labels(items, 0)] == [("a", 1), ("b/0", 0), ("b/1", 2)]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"request_id": "r"}, "label"), ({"label": 1}, "request_id"), ({"items": [{"request_id": "r", "label": "x"}]}, "items.0.label"),
     ({"items": []}, "items"), ({"request_id": "r", "label": 1, "extra": 2}, "extra")],
)
def test_bad_feedback_names_the_field(body, field):
    with pytest.raises(InvalidInput, match=f"feedback field {field}"):
        parse_feedback(body)


def test_label_book_keeps_unknown_ids_for_a_bounded_time_then_counts_them():
    book = LabelBook(max_pending=2, max_age_seconds=10)
    for rid, ts in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        book.offer(LabelRecord(rid, 1, ts))
    assert book.unmatched_total == 1 and len(book) == 2  # full: the oldest went
    assert [lab.request_id for lab in book.take(["c", "zzz"])] == ["c"]
    assert book.expire(now=5.0) == 0 and book.expire(now=11.5) == 1
    assert book.unmatched_total == 2 and len(book) == 0


def _write(tmp_path: Path, rel: str, df: pd.DataFrame) -> Path:
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".parquet":
        df.to_parquet(p)
    else:
        df.to_csv(p, index=False)
    return p


def test_reference_per_version_then_default_parquet_and_csv(tmp_path):
    df = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=["a", "b", "c"])
    _write(tmp_path, "m/v2.parquet", df)
    _write(tmp_path, "m/default.csv", df.assign(prediction=[0, 1, 1, 0]))
    files = ReferenceFiles(tmp_path)
    assert files.find("m", "v2").name == "v2.parquet"
    ref = files.load("m", "v1")  # no v1 file: the model's default
    assert ref.version == "v1" and ref.feature_names == ("a", "b", "c") and ref.predictions.tolist() == [0, 1, 1, 0]
    assert files.load("other", "v1") is None


def test_reference_path_per_model_when_the_directory_has_none(tmp_path):
    own = _write(tmp_path, "elsewhere/iris.parquet", pd.DataFrame(np.ones((3, 2)), columns=["f0", "f1"]))
    files = ReferenceFiles(None, {"iris": own})
    assert files.find("iris", "v9") == own and files.find("other", "v9") is None


def test_reference_columns_must_match_the_servers_metadata(tmp_path):
    _write(tmp_path, "m/default.csv", pd.DataFrame(np.ones((3, 2)), columns=["f0", "f1"]))
    with pytest.raises(ReferenceError, match=r"default.csv: columns \['f0', 'f1'\] are not the model's input features"):
        ReferenceFiles(tmp_path).load("m", "v1", feature_names=("x_0", "x_1"))


def test_feature_names_from_oip_metadata():
    meta = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}, {"name": "age", "datatype": "INT64", "shape": [-1, 1]}]}
    assert feature_names_from_metadata(meta) == ("x_0", "x_1", "x_2", "age")
    assert feature_names_from_metadata({"inputs": []}) is None
    assert feature_names_from_metadata({"inputs": [{"name": "t", "shape": [-1, -1]}]}) is None
