"""The novelty learners (context, fuzzy_art, art_context) and NAB's protocol for them."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from detectors.base import REGISTRY, Detector
from detectors.errors import InvalidInput
from detectors.evaluation.backtest import NabProtocol, backtest_nab, nab_params
from detectors.evaluation.nab import NabFile
from detectors.types import DetectorState
from detectors.univariate import ArtContext, ContextNovelty, FuzzyART
from incidentd.commands import backtest as backtest_cmd
from incidentd.commands import drift as drift_cmd

LEARNERS = ["context", "fuzzy_art", "art_context"]
NAB_RANGE: dict[str, Any] = {"value_min": 0.0, "value_max": 20.0, "probation": 150}


def _pattern(n: int, period: int = 10) -> np.ndarray:
    return (np.arange(n) % period).astype(float)


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("params", [{}, NAB_RANGE], ids=["online-range", "nab-range"])
def test_streaming_equals_batch_under_both_protocols(name: str, params: dict[str, float]) -> None:
    rng = np.random.default_rng(4)
    x = _pattern(2000) + rng.normal(scale=0.3, size=2000)
    x[[30, 900, 1500]] = np.nan
    x[1200] = 19.0
    a, b = REGISTRY[name](**params), REGISTRY[name](**params)
    streamed = np.array([a.update(float(v)) for v in x])
    batched = np.concatenate([b.score_batch(x[:700]), b.score_batch(x[700:1201]), b.score_batch(x[1201:])])
    assert np.array_equal(streamed, batched)
    assert (a.state, a.direction) == (b.state, b.direction)
    cp = json.loads(json.dumps(b.checkpoint()))
    r = Detector.restore(cp)
    tail = x[:300]
    assert [r.update(float(v)) for v in tail] == [a.update(float(v)) for v in tail]


@pytest.mark.parametrize("name", LEARNERS)
def test_a_learned_pattern_is_quiet_and_a_new_level_is_flagged(name: str) -> None:
    d = REGISTRY[name]()
    s = d.score_batch(_pattern(1500))
    assert np.all(s[600:] < d.alarm_threshold)          # the cycle is learned: nothing new in it
    assert d.update(35.0) >= d.alarm_threshold           # far beyond anything seen
    assert d.state is DetectorState.ANOMALOUS


def test_context_flags_a_new_transition_inside_the_known_range() -> None:
    d = ContextNovelty(**NAB_RANGE)
    x = _pattern(1496, period=8) * 2.0 + 2.0              # 2, 4, ..., 16, always in this order
    s = d.score_batch(x)
    assert x[-1] == 16.0
    assert np.all(s[300:] < d.alarm_threshold)
    # 16 -> 2 is the learned wrap-around; 16 -> 10 never happened, though 10 itself is familiar
    assert d.update(10.0) >= d.alarm_threshold


def test_rest_period_masks_the_points_after_an_alarm() -> None:
    d = ContextNovelty(**NAB_RANGE)                      # rest = probation / 5 = 30 points
    d.score_batch(_pattern(1000))
    assert d.update(19.5) >= d.alarm_threshold
    after = [d.update(19.5 - (k % 3)) for k in range(30)]   # more new transitions, all inside the rest
    assert after == [0.0] * 30
    assert d._rest == 30


def test_art_learns_shapes_and_flags_a_new_one() -> None:
    d = FuzzyART(value_min=0.0, value_max=10.0, probation=100)
    x = np.tile([1.0, 1.0, 9.0, 9.0], 300)
    s = d.score_batch(x)
    assert np.all(s[200:] < d.alarm_threshold)
    n_shapes = len(d._norms)
    assert n_shapes <= 8                                  # a handful of categories covers the cycle
    scores = [d.update(v) for v in (5.0, 5.0, 5.0, 5.0)]   # a flat middle: a shape never seen
    assert max(scores) >= d.alarm_threshold
    assert len(d._norms) > n_shapes


def test_online_range_flags_values_leaving_it_after_warmup() -> None:
    d = ContextNovelty(warmup=100, margin=0.25)
    rng = np.random.default_rng(0)
    d.score_batch(10.0 + rng.uniform(-1, 1, size=400))   # learned range about [8.5, 11.5] with margin
    assert d.update(11.2) < d.alarm_threshold            # inside the margin: not a range event
    assert d.update(14.0) >= d.alarm_threshold           # beyond it: new by definition


@pytest.mark.parametrize(("params", "message"), [
    ({"value_min": 1.0}, "give both value_min and value_max"),
    ({"value_min": 3.0, "value_max": 1.0}, "min <= max"),
    ({"probation": -1}, "probation must be >= 0"),
    ({"mask_level": 1.0}, "mask_level must be in (0, 1)"),
    ({"bins": 1}, "bins must be in [2, 64]"),
])
def test_bad_parameters_name_the_problem(params: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        ContextNovelty(**params)  # type: ignore[arg-type]


def test_art_bad_vigilance() -> None:
    with pytest.raises(InvalidInput, match="vigilance"):
        FuzzyART(vigilance=1.0)


def test_nab_params_follow_nab_harness() -> None:
    values = np.array([3.0, -2.0, 7.5] + [1.0] * 997)
    p = nab_params("art_context", values, NabProtocol.NAB)
    assert p == {"value_min": -2.0, "value_max": 7.5, "probation": math.floor(0.15 * 1000)}
    assert nab_params("art_context", values, NabProtocol.ONLINE) == {}
    assert nab_params("surprise", values, NabProtocol.NAB) == {}      # takes neither: runs unchanged
    long = np.zeros(20000)
    assert nab_params("context", long, NabProtocol.NAB)["probation"] == 750   # capped at 0.15 * 5000
    for n in (1000, 4999, 5000, 5001, 6000):
        assert nab_params("context", np.zeros(n), NabProtocol.NAB)["probation"] == NabFile(
            "k", n, []).probation                        # the detector's period is the scorer's


def _app() -> typer.Typer:
    app = typer.Typer()
    backtest_cmd.register(app)
    drift_cmd.register(app)
    return app


def _nab_folder(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "catA").mkdir(parents=True)
    rng = np.random.default_rng(2)
    n = 1200
    ts = pd.date_range("2024-01-01", periods=n, freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    v = 50 + 5 * np.sin(np.arange(n) / 20) + rng.normal(size=n)
    v[1000] += 40
    pd.DataFrame({"timestamp": ts, "value": v}).to_csv(data / "catA" / "one.csv", index=False)
    labels = {"catA/one.csv": [[ts[990] + ".000000", ts[1040] + ".000000"]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    return data, tmp_path / "labels.json"


def test_backtest_nab_passes_the_file_range_and_probation(tmp_path: Path) -> None:
    data, _ = _nab_folder(tmp_path)
    v = pd.read_csv(data / "catA" / "one.csv")["value"].to_numpy()
    res = backtest_nab(data, None, "art_context", protocol=NabProtocol.NAB)
    expected = ArtContext(value_min=float(v.min()), value_max=float(v.max()), probation=180).score_batch(v)
    assert np.array_equal(res["catA/one.csv"][0], np.clip(expected, 0, 1))
    online = backtest_nab(data, None, "art_context", protocol=NabProtocol.ONLINE)
    assert np.array_equal(online["catA/one.csv"][0], ArtContext().score_batch(v))


def test_cli_both_protocols_print_both_scores_and_plot(tmp_path: Path) -> None:
    app = _app()
    data, labels = _nab_folder(tmp_path)
    png = tmp_path / "plot.png"
    res = CliRunner().invoke(app, ["backtest", "--nab", str(data), "--output", str(tmp_path / "out"),
                                   "--detector", "context", "--protocol", "both", "--score", str(labels),
                                   "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "protocol nab" in res.output and "protocol online" in res.output
    assert (tmp_path / "out" / "nab" / "catA" / "context_one.csv").exists()
    assert (tmp_path / "out" / "online" / "catA" / "context_one.csv").exists()
    for proto in ("nab", "online"):
        head = (tmp_path / f"plot-{proto}.png").read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_protocol_names_the_problem(tmp_path: Path) -> None:
    app = _app()
    data, labels = _nab_folder(tmp_path)
    res = CliRunner().invoke(app, ["backtest", "--nab", str(data), "--score", str(labels),
                                   "--protocol", "psychic"])
    assert res.exit_code == 2
    assert "--protocol must be nab, online or both" in res.output


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("params", [{}, {"value_min": -1.7e308, "value_max": 1.7e308, "probation": 100}],
                         ids=["online-range", "nab-range"])
def test_values_near_the_float_limits_neither_overflow_nor_break_equality(
        name: str, params: dict[str, Any]) -> None:
    x = np.r_[np.zeros(200), 1.7e308, -1.7e308, np.random.default_rng(0).normal(size=300)]
    a, b = REGISTRY[name](**params), REGISTRY[name](**params)
    with np.errstate(all="raise"):
        streamed = np.array([a.update(float(v)) for v in x])
        batched = b.score_batch(x)
    assert np.all(np.isfinite(streamed)) and np.array_equal(streamed, batched)
    if not params:                                             # online: a new extreme is new
        assert streamed[200] >= a.alarm_threshold
