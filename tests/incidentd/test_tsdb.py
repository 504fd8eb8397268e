"""The embedded store at fleet scale: indexed by model, bounded rings, windowed reads, expiry on demand."""
from __future__ import annotations

import httpx
import pytest

from incidentd.sources.base import Series
from incidentd.sources.batch import BatchedSource
from incidentd.tsdb import EmbeddedStore, Scraper


def line(model: str, value: float, feature: str = "a") -> str:
    return f'model_feature_drift_statistic{{model="{model}",feature="{feature}",test="ks"}} {value}\n'


def test_reads_for_one_model_see_only_that_models_series() -> None:
    store = EmbeddedStore(3600, 100)
    for t in range(10):
        store.ingest_text(line("a", t) + line("b", 100 + t) + 'model_up{model="a"} 1\n', at=float(t))
    got = store.read("model_feature_drift_statistic", {"model": "b"}, 0, 100, 1)
    assert [s.label("model") for s in got] == ["b"]
    assert got[0].values == tuple(float(100 + t) for t in range(10))
    assert store.models() == ["a", "b"]
    assert sorted(store.read_by_model("model_feature_drift_statistic", None, 0, 100, 1)) == ["a", "b"]


def test_a_read_returns_exactly_the_window_asked_for_even_after_the_ring_wrapped() -> None:
    store = EmbeddedStore(10_000, max_points=50)
    for t in range(120):                       # 120 points into a ring of 50: it wrapped twice
        store.ingest_text(line("m", t), at=float(t))
    (s,) = store.read("model_feature_drift_statistic", {"model": "m"}, 95.0, 104.0, 1)
    assert s.timestamps == tuple(float(t) for t in range(95, 105))
    (full,) = store.read("model_feature_drift_statistic", None, 0, 1000, 1)
    assert full.timestamps == tuple(float(t) for t in range(70, 120))   # the newest 50, in order


def test_points_cost_sixteen_bytes_once_a_series_is_full() -> None:
    store = EmbeddedStore(10_000, max_points=64)
    for t in range(64):
        store.ingest_text(line("m", t), at=float(t))
    assert store.array_bytes() / store.point_count() == 16


def test_out_of_order_and_repeated_samples_keep_the_series_sorted() -> None:
    store = EmbeddedStore(10_000, max_points=10)
    for t in (1.0, 3.0, 2.0, 3.0):
        store.ingest_text(line("m", t * 10), at=t)
    (s,) = store.read("model_feature_drift_statistic", None, 0, 10, 1)
    assert s.timestamps == (1.0, 2.0, 3.0)
    assert s.values == (10.0, 20.0, 30.0)
    assert store.out_of_order == 1


def test_expiry_runs_when_called_and_drops_series_that_stopped() -> None:
    store = EmbeddedStore(retention_seconds=100, max_points=1000)
    for t in range(50):
        store.ingest_text(line("old", t) + line("live", t), at=float(t))
    for t in range(50, 200):
        store.ingest_text(line("live", t), at=float(t), origin="live")
    # Nothing expired yet: ingest does not walk the store.
    assert store.models() == ["live", "old"]
    assert store.expire(now=200.0) == 1
    assert store.models() == ["live"]
    (s,) = store.read("model_feature_drift_statistic", {"model": "live"}, 0, 1000, 1)
    assert s.timestamps[0] == 100.0
    store.ingest_text(line("live", 200), at=200.0, origin="live")   # the cached line still resolves
    (s,) = store.read("model_feature_drift_statistic", {"model": "live"}, 200, 200, 1)
    assert s.values == (200.0,)


def test_forgetting_a_model_removes_its_series_only() -> None:
    store = EmbeddedStore()
    store.ingest_text(line("a", 1) + line("b", 2), at=1.0, origin="t")
    assert store.forget_model("a") == 1
    assert store.models() == ["b"]
    store.ingest_text(line("a", 3) + line("b", 4), at=2.0, origin="t")   # a comes back: a new series
    assert store.read("model_feature_drift_statistic", {"model": "a"}, 0, 10, 1)[0].values == (3.0,)


def test_malformed_exposition_is_rejected_with_the_line_and_ingests_nothing() -> None:
    store = EmbeddedStore()
    with pytest.raises(ValueError, match="not an exposition sample line"):
        store.ingest_text('model_up{model="ok"} 1\nmodel_up{model="m"} one\n', at=1.0, origin="t")
    assert store.point_count() == 0


def test_a_target_whose_lines_change_keeps_every_sample_on_its_own_series() -> None:
    store = EmbeddedStore(10_000, max_points=100)
    scrapes = [line("m", 1, "a") + line("m", 2, "b"),
               line("m", 3, "a") + line("m", 4, "b"),                     # same lines: the fast path
               line("m", 6, "b") + line("m", 5, "a") + line("m", 7, "c"),  # reordered, one more
               line("m", 8, "a")]                                          # fewer
    for t, text in enumerate(scrapes):
        store.ingest_text(text, at=float(t), origin="t")
    got = {s.label("feature"): s.values for s in store.read("model_feature_drift_statistic", None, 0, 10, 1)}
    assert got == {"a": (1.0, 3.0, 5.0, 8.0), "b": (2.0, 4.0, 6.0), "c": (7.0,)}
    assert store.models_of("t") == {"m"}


def test_exposition_timestamps_are_milliseconds() -> None:
    store = EmbeddedStore()
    store.ingest_text('model_up{model="m"} 1 5000\n', at=99.0)
    assert store.read("model_up", None, 0, 100, 1)[0].timestamps == (5.0,)


def test_scraper_reads_many_targets_and_records_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "down":
            return httpx.Response(503, text="unavailable")
        return httpx.Response(200, text=f'model_up{{model="{host}"}} 1\n')

    store = EmbeddedStore()
    targets = [f"http://m{i}:9000" for i in range(20)] + ["http://down:9000"]
    scraper = Scraper(store, targets, client=httpx.Client(transport=httpx.MockTransport(handler)))
    try:
        assert scraper.scrape_once(now=10.0) == 20
    finally:
        scraper.close()
    assert len(store.models()) == 20
    assert scraper.failures["http://down:9000"] == 1
    assert "503" in scraper.last_error["http://down:9000"]


class CountingSource:
    def __init__(self, inner: EmbeddedStore):
        self.inner = inner
        self.calls: list[str] = []

    def read(self, metric, matchers, start, end, step):
        self.calls.append(f"read {metric} {matchers}")
        return self.inner.read(metric, matchers, start, end, step)

    def read_by_model(self, metric, matchers, start, end, step):
        self.calls.append(f"batch {metric}")
        return self.inner.read_by_model(metric, matchers, start, end, step)


def test_batched_source_asks_once_per_metric_and_cycle_for_all_models() -> None:
    store = EmbeddedStore()
    for t in range(0, 100, 10):
        store.ingest_text("".join(line(m, t) for m in ("a", "b", "c")), at=float(t))
    counting = CountingSource(store)
    src = BatchedSource(counting, slack=30)
    per_model = {m: src.read("model_feature_drift_statistic", {"model": m}, 60, 90, 10) for m in "abc"}
    assert counting.calls == ["batch model_feature_drift_statistic"]
    for m, series in per_model.items():
        assert series == store.read("model_feature_drift_statistic", {"model": m}, 60, 90, 10)
    # A read reaching before the batch goes to the source for that model alone.
    older = src.read("model_feature_drift_statistic", {"model": "a"}, 0, 90, 10)
    assert older == store.read("model_feature_drift_statistic", {"model": "a"}, 0, 90, 10)
    assert counting.calls[-1].startswith("read model_feature_drift_statistic")
    # The next cycle (a new end) batches again.
    src.read("model_feature_drift_statistic", {"model": "b"}, 70, 100, 10)
    assert counting.calls[-1] == "batch model_feature_drift_statistic"


class MillisecondSource:
    """Answers as Prometheus does: evaluation times in whole milliseconds, the last one at ``end`` rounded."""

    def read(self, metric, matchers, start, end, step):
        return []

    def read_by_model(self, metric, matchers, start, end, step):
        last = round(end, 3)
        return {"a": [Series(metric, (("model", "a"),), (last,), (1.0,))]}


def test_the_point_at_end_survives_prometheus_millisecond_rounding() -> None:
    # A sample scraped less than one step ago is evaluated only at ``end``; rounded up, it is still there.
    end = 1796134870.3669395
    (s,) = BatchedSource(MillisecondSource(), slack=30).read("m", {"model": "a"}, end - 20, end, 1.0)
    assert s.values == (1.0,)
