"""The NAB scorer: reference points (null 0, perfect 100), hand-computed cases, sweep = direct definition."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from detectors.evaluation.nab import NabFile, file_score, optimize, score_corpus, sigma


def test_sigma_reference_values() -> None:
    assert sigma(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert sigma(0.0) == 0.0
    assert sigma(1.0) == pytest.approx(-0.98661, abs=1e-5)


FILES = [NabFile("a/x.csv", 1000, [(400, 449), (700, 749)]), NabFile("a/y.csv", 800, []),
         NabFile("b/z.csv", 2000, [(1500, 1599)])]


def test_null_scores_zero_and_perfect_scores_hundred() -> None:
    null = [np.zeros(f.n_rows) for f in FILES]
    perfect = []
    for f in FILES:
        s = np.zeros(f.n_rows)
        for lo, _ in f.windows:
            s[lo] = 1.0
        perfect.append(s)
    for profile, res in score_corpus(FILES, null).items():
        assert res.normalized == pytest.approx(0.0), profile
        assert res.threshold == 1.1
    for profile, res in score_corpus(FILES, perfect).items():
        assert res.normalized == pytest.approx(100.0), profile
        assert (res.tp, res.fp, res.fn) == (3, 0, 0)


def test_hand_computed_small_case() -> None:
    # one 100-row file: probation 15 rows, window rows 50..59 (W = 10)
    f = NabFile("c/h.csv", 100, [(50, 59)])
    s = np.zeros(100)
    s[10] = 0.9          # in probation: ignored
    s[30] = 0.9          # FP before any window: -A_FP
    s[55] = 0.9          # TP: y = -(59 - 55 + 1)/10 = -0.5
    s[57] = 0.9          # later detection in the same window: no effect
    s[62] = 0.9          # FP 3 rows after the window: x = 3/9
    tp = sigma(-0.5) / sigma(-1.0)
    fp_after = 0.11 * sigma(3 / 9)
    want = -0.11 + tp + fp_after
    assert file_score(f, s, 0.5, "standard") == pytest.approx(want, rel=1e-12)
    res = optimize([f], [s], "standard")
    assert res.threshold == 0.9
    assert res.raw == pytest.approx(want, rel=1e-12)
    assert res.normalized == pytest.approx(100 * (want + 1) / 2)
    # far after the window (x > 3) a FP costs the full A_FP
    s2 = np.zeros(100)
    s2[95] = 1.0
    assert file_score(f, s2, 0.5, "reward_low_FP_rate") == pytest.approx(-0.22 - 1.0)


def test_sweep_equals_brute_force_over_all_thresholds() -> None:
    rng = np.random.default_rng(0)
    scores = [np.round(rng.random(f.n_rows) ** 8, 3) for f in FILES]   # many ties, like real detectors
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        res = optimize(FILES, scores, profile)
        cands = sorted({float(v) for f, s in zip(FILES, scores) for v in s[f.probation:]} | {1.1})
        totals = [sum(file_score(f, s, t, profile) for f, s in zip(FILES, scores)) for t in cands]
        best = max(totals)
        best_t = max(t for t, v in zip(cands, totals) if math.isclose(v, best, rel_tol=0, abs_tol=1e-9))
        assert res.raw == pytest.approx(best, abs=1e-9)
        assert res.threshold == best_t


def test_only_the_ordering_of_scores_matters() -> None:
    rng = np.random.default_rng(1)
    scores = [rng.random(f.n_rows) for f in FILES]
    a = score_corpus(FILES, scores)
    b = score_corpus(FILES, [np.sqrt(s) / 2 for s in scores])
    for p in a:
        assert a[p].normalized == pytest.approx(b[p].normalized, abs=1e-9)


NAB_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "nab"


@pytest.mark.skipif(not (NAB_DIR / "labels" / "combined_windows.json").is_file(), reason="no ../shared/nab")
def test_reference_detectors_on_the_shared_nab_files() -> None:
    """Null scores 0 and a perfect detector 100 on the real corpus; 97 windows are found by timestamp."""
    import pandas as pd

    from detectors.evaluation.nab import list_data_files, load_labels, windows_to_rows

    labels = load_labels(NAB_DIR / "labels" / "combined_windows.json")
    files = []
    for key in list_data_files(NAB_DIR / "data"):
        ts = pd.read_csv(NAB_DIR / "data" / key, usecols=["timestamp"], dtype=str)["timestamp"].tolist()
        files.append(NabFile(key, len(ts), windows_to_rows(key, ts, labels[key])))
    assert len(files) == 51 and sum(len(f.windows) for f in files) == 97
    assert all(lo >= f.probation for f in files for lo, _ in f.windows)
    null = [np.zeros(f.n_rows) for f in files]
    perfect = []
    for f in files:
        s = np.zeros(f.n_rows)
        s[[lo for lo, _ in f.windows]] = 1.0
        perfect.append(s)
    for res in score_corpus(files, null).values():
        assert res.normalized == pytest.approx(0.0)
    for res in score_corpus(files, perfect).values():
        assert res.normalized == pytest.approx(100.0)
    # one detection at the *last* row of every window instead: sigma(-1/W)/sigma(-1) each, tiny
    late = []
    for f in files:
        s = np.zeros(f.n_rows)
        s[[hi for _, hi in f.windows]] = 1.0
        late.append(s)
    res = score_corpus(files, late, ["standard"])["standard"]
    assert 50.0 < res.normalized < 51.0
