"""Metric maps: loading, validation errors that name file and field, and mapping of recorded expositions.

Every exposition under expositions/ names its source in its first lines: the live MLServer 1.7 one was
scraped from a server started here; the others are written from each server's documented metric list.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from collector.adapters import (
    SERVER_WIDE,
    MapError,
    ReadingWindow,
    Signal,
    builtin_maps,
    choose_kind,
    extract,
    load_map,
    load_maps,
    parse_families,
)
from collector.adapters.engine import Histogram

HERE = Path(__file__).parent / "expositions"
MAPS = builtin_maps()


def read(name: str, kind: str | None = None, at: float = 0.0):
    fams = parse_families((HERE / name).read_text())
    k = kind or choose_kind(fams, MAPS).kind
    return extract(MAPS[k], fams, at)


def test_every_kind_of_the_issue_ships_a_map():
    assert set(MAPS) >= {"ours", "mlserver", "triton", "kserve", "torchserve", "bentoml", "vllm", "tgi"}


@pytest.mark.parametrize(
    ("file", "kind"),
    [
        ("mlserver_live.prom", "mlserver"),
        ("triton_documented.prom", "triton"),
        ("torchserve_documented.prom", "torchserve"),
        ("kserve_documented.prom", "kserve"),
        ("bentoml_documented.prom", "bentoml"),
        ("vllm_v1_documented.prom", "vllm"),
        ("vllm_v0_documented.prom", "vllm"),
        ("tgi_documented.prom", "tgi"),
    ],
)
def test_auto_detection_recognises_each_server(file, kind):
    assert choose_kind(parse_families((HERE / file).read_text()), MAPS).kind == kind


def test_auto_detection_recognises_our_own_instrumentation():
    from prometheus_client import CollectorRegistry, generate_latest

    from collector.instrumentation import ModelInstrumentation

    reg = CollectorRegistry()
    ModelInstrumentation(reg, model="m", version="v1")
    assert choose_kind(parse_families(generate_latest(reg).decode()), MAPS).kind == "ours"


def test_unknown_exposition_is_an_error_naming_the_known_kinds():
    with pytest.raises(MapError, match="no metric map recognises"):
        choose_kind(parse_families("# TYPE foo counter\nfoo_total 1\n"), MAPS)


def test_mlserver_live_counts_and_server_wide_latency():
    r = read("mlserver_live.prom")
    tiny = r.models[("tiny", "")]  # version="None" is read as no version
    assert tiny.counters[Signal.REQUESTS] == 2 and tiny.counters[Signal.ERRORS] == 1
    h = r.models[SERVER_WIDE].histograms[Signal.LATENCY]
    assert h.count == 2 and h.bounds[0] == 0.005 and math.isinf(h.bounds[-1])


def test_triton_microsecond_counter_pair_gives_mean_latency_per_interval():
    text = (HERE / "triton_documented.prom").read_text()
    w = ReadingWindow(60)
    w.add(extract(MAPS["triton"], parse_families(text), at=0.0))
    later = text.replace("} 200000", "} 1200000").replace("success{model=\"tiny\",version=\"1\"} 40", "success{model=\"tiny\",version=\"1\"} 140")
    w.add(extract(MAPS["triton"], parse_families(later), at=10.0))
    # 1,000,000 µs over 100 more requests: 10 ms each, whatever the first 40 took.
    assert w.mean(("tiny", "1"), Signal.LATENCY) == pytest.approx(0.010)
    assert w.latest(("tiny", "1"), Signal.REQUESTS) == 144
    assert w.latest(("tiny", "1"), Signal.ERRORS) == 4
    assert w.latest(("tiny", "1"), Signal.QUEUED) == 2


def test_triton_gpu_series_are_keyed_by_gpu_uuid():
    r = read("triton_documented.prom")
    g = r.gpus["GPU-b2f3"]
    assert g[Signal.GPU_UTILIZATION] == 0.42 and g[Signal.GPU_MEMORY_TOTAL] == 17179869184


def test_torchserve_microseconds_and_trailing_comma_labels():
    r = read("torchserve_documented.prom")
    w = ReadingWindow()
    w.add(r)
    # "default" names the default version, not a version: the version comes from the answers
    assert ("tiny", "") in r.model_keys() and ("tiny", "default") not in r.model_keys()
    assert w.mean(("tiny", ""), Signal.LATENCY) == pytest.approx(150000e-6 / 50)
    assert w.latest(("tiny", ""), Signal.ERRORS) == 3  # host-level 5XX, no model label
    assert r.gpus["0"][Signal.GPU_UTILIZATION] == pytest.approx(0.37)
    assert r.gpus["0"][Signal.GPU_MEMORY_USED] == 1024 * 1024 * 1024


def test_kserve_request_count_is_the_predict_histograms_count():
    r = read("kserve_documented.prom")
    assert r.models[("tiny", "")].counters[Signal.REQUESTS] == 10


def test_bentoml_counts_inference_endpoints_only_and_5xx_as_errors():
    r = read("bentoml_documented.prom")
    m = r.models[("Summarization", "abc123")]
    assert m.counters[Signal.REQUESTS] == 20 and m.counters[Signal.ERRORS] == 2
    assert m.histograms[Signal.LATENCY].count == 20  # /healthz left out


def test_vllm_renamed_kv_cache_and_inter_token_metrics_map_to_the_same_signals():
    new = read("vllm_v1_documented.prom").models[("unsloth/Llama-3.2-1B-Instruct", "")]
    old = read("vllm_v0_documented.prom").models[("facebook/opt-125m", "")]
    assert new.gauges[Signal.KV_CACHE_USAGE] == 0.37 and old.gauges[Signal.KV_CACHE_USAGE] == 0.12
    assert Signal.INTER_TOKEN_LATENCY in new.histograms and Signal.INTER_TOKEN_LATENCY in old.histograms
    assert new.gauges[Signal.QUEUED] == 5 and new.gauges[Signal.IN_FLIGHT] == 3
    w = ReadingWindow()
    w.add(read("vllm_v1_documented.prom"))
    key = ("unsloth/Llama-3.2-1B-Instruct", "")
    ttft = w.quantiles(key, Signal.TIME_TO_FIRST_TOKEN)
    assert 0.02 <= ttft[0.5] <= 0.04  # rank 50 of 100 lies in the (0.02, 0.04] bucket
    e2e = w.quantiles(key, Signal.LATENCY)
    assert 0.5 <= e2e[0.9] <= 1.0


def test_tgi_has_no_model_label_so_everything_is_server_wide():
    r = read("tgi_documented.prom")
    assert list(r.models) == [SERVER_WIDE]
    w = ReadingWindow()
    w.add(r)
    assert w.latest(("whatever", ""), Signal.REQUESTS) == 25  # falls back to the server-wide series
    assert 0.5 <= w.quantiles(("whatever", ""), Signal.LATENCY)[0.5] <= 1.0


def test_histogram_quantile_matches_prometheus_interpolation():
    h = Histogram((0.1, 0.2, 0.4, math.inf), (10.0, 30.0, 40.0, 40.0), 6.0, 40.0)
    assert h.quantile(0.5) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert h.quantile(0.99) == pytest.approx(0.2 + 0.2 * (39.6 - 30) / 10)


def test_window_uses_the_interval_delta_and_survives_a_counter_reset():
    fams = lambda n_fast, n_slow: parse_families(  # noqa: E731
        "# TYPE request_predict_seconds histogram\n"
        f'request_predict_seconds_bucket{{le="0.01",model_name="m"}} {n_fast}\n'
        f'request_predict_seconds_bucket{{le="1.0",model_name="m"}} {n_fast + n_slow}\n'
        f'request_predict_seconds_bucket{{le="+Inf",model_name="m"}} {n_fast + n_slow}\n'
        f'request_predict_seconds_count{{model_name="m"}} {n_fast + n_slow}\n'
        f'request_predict_seconds_sum{{model_name="m"}} 1\n'
    )
    w = ReadingWindow(60)
    w.add(extract(MAPS["kserve"], fams(100, 0), at=0))
    w.add(extract(MAPS["kserve"], fams(100, 50), at=10))  # only slow requests since the first reading
    assert w.quantiles(("m", ""), Signal.LATENCY)[0.5] > 0.01
    w.add(extract(MAPS["kserve"], fams(5, 0), at=20))  # restarted server: counters went back
    assert w.quantiles(("m", ""), Signal.LATENCY)[0.5] <= 0.01


def test_builtin_maps_load_from_the_installed_package_data():
    for m in MAPS.values():
        assert m.signals and m.source


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "custom.yaml"
    p.write_text(text)
    return p


def test_user_map_extends_the_builtins(tmp_path):
    p = _write(
        tmp_path,
        "kind: mine\ndetect: {any: [my_requests_total]}\nlabels: {model: svc}\n"
        "signals:\n  requests_total: {type: counter, metric: my_requests_total}\n",
    )
    maps = load_maps([p])
    assert "mine" in maps and "triton" in maps
    fams = parse_families('# TYPE my_requests counter\nmy_requests_total{svc="a"} 7\n')
    assert choose_kind(fams, maps).kind == "mine"
    assert extract(maps["mine"], fams, 0).models[("a", "")].counters[Signal.REQUESTS] == 7


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("kind: x\ndetect: {any: [a]}\nsignals:\n  latency: {type: gauge, metric: a}\n", "latency.type"),
        ("kind: x\ndetect: {any: [a]}\nsignals:\n  latency: {type: counter_pair, metric: a, unit: seconds}\n", "signals.latency"),
        ("kind: x\ndetect: {any: [a]}\nsignals:\n  throughput: {type: counter, metric: a}\n", "signals.throughput"),
        ("kind: x\ndetect: {any: [a]}\nsignals:\n  requests_total: {type: counter, metric: 'bad name'}\n", "signals.requests_total.metric"),
        ("kind: x\ndetect: {any: [a]}\nsignals:\n  latency: {type: histogram, metric: a, unit: bytes}\n", "latency.unit"),
        ("kind: x\nsignals: {}\n", "detect"),
        ("kind: x\ndetect: {any: [a]}\nsignals: {}\nextra_field: 1\n", "extra_field"),
        ("kind: x\ndetect: {any: [a]}\nsignals:\n  errors_total: {type: counter, metric: a, where: {code: '5(('}}\n", "where"),
    ],
)
def test_bad_maps_fail_at_load_naming_file_and_field(tmp_path, body, field):
    p = _write(tmp_path, body)
    with pytest.raises(MapError) as err:
        load_map(p)
    assert str(p) in str(err.value) and field in str(err.value)


def test_a_map_that_is_not_yaml_or_not_a_mapping_is_rejected(tmp_path):
    with pytest.raises(MapError, match="not YAML"):
        load_map(_write(tmp_path, "kind: [unclosed\n"))
    with pytest.raises(MapError, match="is a mapping"):
        load_map(_write(tmp_path, "- a\n- b\n"))
