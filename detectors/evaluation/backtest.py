"""Backtests: run a registered detector causally over a series, a file, or a whole NAB-layout folder."""
from __future__ import annotations

import enum
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import REGISTRY, Detector
from detectors.errors import InvalidInput
from detectors.evaluation.nab import NabFile, list_data_files, load_labels, score_corpus, windows_to_rows


def make_detector(name: str | None = None, **params: Any) -> Detector:
    """A fresh registered detector by name (the default detector when ``name`` is None)."""
    import detectors.rates  # noqa: F401  (register everything)
    import detectors.univariate as uni

    name = name or uni.DEFAULT_DETECTOR
    if name not in REGISTRY:
        raise InvalidInput(f"unknown detector {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


class NabProtocol(enum.StrEnum):
    """What a detector is told about a NAB file before it streams it."""

    NAB = "nab"          # as NAB's harness does: the file's value range and its probationary period
    ONLINE = "online"    # nothing: the range is learned online, as in the service


# NAB's detector harness (nab/detectors/base.py, AnomalyDetector.__init__) gives every detector
# probationaryPeriod = getProbationPeriod(0.15, rows) = min(floor(0.15 * rows), 0.15 * 5000) (nab/util.py;
# the same period the scorer leaves unscored) and inputMin / inputMax = the minimum and maximum of the
# file's "value" column.
NAB_PROBATIONARY_PERCENT = 0.15


def nab_probation(n_rows: int) -> int:
    """NAB's probationary period of a file: 15 % of its rows, at most 750."""
    return int(min(math.floor(NAB_PROBATIONARY_PERCENT * n_rows), NAB_PROBATIONARY_PERCENT * 5000))


def nab_params(detector: str | None, values: np.ndarray, protocol: NabProtocol) -> dict[str, Any]:
    """Constructor arguments a detector gets for one NAB file under ``protocol``.

    Only detectors that declare ``value_min``, ``value_max`` and ``probation`` receive them; the others
    run unchanged under either protocol.
    """
    import detectors.univariate as uni

    cls = REGISTRY[detector or uni.DEFAULT_DETECTOR]
    if protocol is NabProtocol.ONLINE or "value_min" not in cls._param_names():
        return {}
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    if len(finite) == 0:
        return {}
    return {"value_min": float(finite.min()), "value_max": float(finite.max()),
            "probation": nab_probation(len(v))}


def score_series(values: np.ndarray, detector: str | None = None, timestamps: np.ndarray | None = None,
                 params: dict[str, Any] | None = None) -> np.ndarray:
    """Causal scores in [0, 1], one per value (the vectorized batch path of the detector)."""
    det = make_detector(detector, **(params or {}))
    s = det.score_batch(np.asarray(values, dtype=float), timestamps)
    return np.asarray(np.clip(np.nan_to_num(s, nan=0.0), 0.0, 1.0), dtype=float)


def timestamps_seconds(ts: Any) -> np.ndarray | None:
    """Timestamps as float seconds since the epoch (None when they cannot be parsed)."""
    import pandas as pd

    try:
        t = pd.to_datetime(pd.Series(ts), errors="raise")
    except (ValueError, TypeError):
        return None
    return np.asarray(t.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9, dtype=float)


def backtest_file(input_path: str | Path, output_path: str | Path, detector: str | None = None) -> np.ndarray:
    """Read timestamp,value; write timestamp,value,anomaly_score (same rows, same order)."""
    from detectors.io import read_series

    df = read_series(input_path)
    scores = score_series(df["value"].to_numpy(), detector, timestamps_seconds(df["timestamp"]))
    out = df.copy()
    out["anomaly_score"] = scores
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output_path, index=False, float_format="%.17g")
    return scores


def result_name(detector: str) -> str:
    """NAB splits result file names on '_', so the detector part must not contain one."""
    return detector.replace("_", "")


def backtest_nab(data_dir: str | Path, output_dir: str | Path | None, detector: str | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 categories: set[str] | None = None, protocol: NabProtocol = NabProtocol.NAB,
                 ) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Run every ``<category>/<file>.csv`` of a NAB data folder; write NAB's results layout if asked.

    Under ``NabProtocol.NAB`` (the default) each detector that takes them gets the file's value range
    and probationary period, as NAB's harness passes them; under ``ONLINE`` it gets neither.
    Returns ``{key: (scores, timestamps)}``.
    """
    import detectors.univariate as uni
    from detectors.io import read_series

    det_name = detector or uni.DEFAULT_DETECTOR
    make_detector(det_name)  # fail early on an unknown name
    keys = list_data_files(data_dir)
    if categories:
        keys = [k for k in keys if k.split("/")[0] in categories]
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for i, key in enumerate(keys):
        df = read_series(Path(data_dir) / key)
        values = df["value"].to_numpy()
        scores = score_series(values, det_name, timestamps_seconds(df["timestamp"]),
                              nab_params(det_name, values, protocol))
        ts = [str(t) for t in df["timestamp"]]
        out[key] = (scores, ts)
        if output_dir is not None:
            cat, fname = key.split("/", 1)
            dest = Path(output_dir) / cat / f"{result_name(det_name)}_{fname}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            res = df.copy()
            res["anomaly_score"] = scores
            res.to_csv(dest, index=False, float_format="%.17g")
        if progress is not None:
            progress(i + 1, len(keys), key)
    return out


def nab_files(results: dict[str, tuple[np.ndarray, list[str]]], labels_path: str | Path) -> list[NabFile]:
    labels = load_labels(labels_path)
    files = []
    for key, (scores, ts) in results.items():
        if key not in labels:
            raise InvalidInput(f"{labels_path}: no windows listed for data file {key!r}")
        files.append(NabFile(key, len(scores), windows_to_rows(key, ts, labels[key])))
    return files


def score_nab(results: dict[str, tuple[np.ndarray, list[str]]], labels_path: str | Path) -> dict[str, Any]:
    """NAB normalized scores (standard, reward_low_FP_rate, reward_low_FN_rate) of backtest results."""
    files = nab_files(results, labels_path)
    return score_corpus(files, [results[f.key][0] for f in files])
