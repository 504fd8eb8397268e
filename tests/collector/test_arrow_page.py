"""The compact columnar prediction page (issue 13): Arrow IPC round-trips to the same records as JSON."""

from __future__ import annotations

import math

import httpx

from collector.instrumentation import ARROW_STREAM, Page, PredictionRecord, prediction_page_arrow
from collector.scrape import ModelServerClient
from collector.windows import PredictionRecord as WindowRecord


def _records() -> list[PredictionRecord]:
    return [
        PredictionRecord("a", 1.5, "v1", [1.0, None, 3.0], 2, True, 0.004),
        PredictionRecord("b", 2.5, "v1", [4.0, 5.0, 6.0], None, False, 0.006),
        PredictionRecord("c", 3.5, "v2", [7.0], None, True, 0.001, "invalid_input"),  # a ragged bad request
    ]


def _client(handler) -> ModelServerClient:  # type: ignore[no-untyped-def]
    return ModelServerClient("http://model", client=httpx.Client(base_url="http://model", transport=httpx.MockTransport(handler)))


def test_arrow_page_reads_back_as_the_json_page_would():
    page = Page(cursor=42, records=tuple(_records()))
    body = prediction_page_arrow(page)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["format"] == "arrow"
        return httpx.Response(200, content=body, headers={"content-type": ARROW_STREAM})

    got = _client(handler).predictions(after=0)
    want = [WindowRecord.from_json(r.as_dict()) for r in page.records]
    assert got.cursor == 42
    for g, w in zip(got.records, want, strict=True):
        assert (g.request_id, g.ts, g.version, g.prediction, g.finite, g.latency_seconds, g.error) == (
            w.request_id, w.ts, w.version, w.prediction, w.finite, w.latency_seconds, w.error)
        assert g.inputs.shape == w.inputs.shape
        assert all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(g.inputs, w.inputs, strict=True))


def test_a_server_without_arrow_pages_is_read_as_json_and_not_asked_again():
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("format"))
        if request.url.params.get("format") == "arrow":
            return httpx.Response(422, json={"detail": "format"})
        return httpx.Response(200, json={"cursor": 1, "records": [_records()[0].as_dict()]})

    c = _client(handler)
    assert [r.request_id for r in c.predictions(after=0).records] == ["a"]
    c.predictions(after=1)
    assert asked == ["arrow", None, None]
