"""Throughput of every registered detector (streaming and vectorized batch) and false alarms on noise.

    PYTHONPATH=. python benchmarks/detector_benchmark.py [--points 1000000] [--river-python PY]

Single process, single thread (OMP/BLAS threads do not matter: the paths are elementwise or lfilter).
Each rate is the best of ``--repeat`` runs on fresh detectors: on a shared machine the slowest runs
measure the neighbours, not the detector. ``--nab-protocol`` also times the novelty learners with a
known value range (as under ``backtest --nab``). ``--river-python`` names the interpreter of a venv with
``river`` installed: right after our detectors, the same streaming arrays are timed through river's
equivalents (``benchmarks/_river_peer.py``), and the ratios are printed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import detectors.rates  # noqa: F401  (registers BernoulliCUSUM)
import detectors.univariate as uni
from detectors.base import REGISTRY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000, help="batch points per detector")
    ap.add_argument("--stream-points", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per detector; the best is reported")
    ap.add_argument("--only", default="", help="comma-separated detector names (default: all)")
    ap.add_argument("--nab-protocol", action="store_true",
                    help="also time the novelty learners with a known value range and probation")
    ap.add_argument("--river-python", default="", help="python of a venv with river installed")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    # slow by nature (per-point work grows with a window or a category memory): fewer batch points
    slow = ("bocpd", "anomaly_likelihood", "robust_z", "fuzzy_art", "art_context", "spectral_residual")
    print(f"{'detector':<26} {'batch pts/s':>14} {'stream pts/s':>14} {'false alarms (N(0,1))':>22}")
    rates: dict[str, float] = {}
    runs: list[tuple[str, dict[str, float]]] = [(n, {}) for n in sorted(REGISTRY) if not only or n in only]
    if args.nab_protocol:
        known = {"value_min": -6.0, "value_max": 6.0, "probation": 750}
        runs += [(n, known) for n in ("context", "fuzzy_art", "art_context") if not only or n in only]
    stream_noise = rng.normal(size=args.stream_points)
    stream_bits = (rng.random(args.stream_points) < 0.05).astype(float)
    for name, params in runs:
        cls = REGISTRY[name]
        binary = cls.input_kind == "binary"
        n_batch = args.points if name not in slow else args.points // 20
        x = (rng.random(n_batch) < 0.05).astype(float) if binary else rng.normal(size=n_batch)
        n_stream = min(args.stream_points, n_batch) if name not in ("bocpd", "fuzzy_art", "art_context") else 5_000
        xs = (stream_bits if binary else stream_noise)[:n_stream].tolist()
        t_batch = t_stream = float("inf")
        for _ in range(max(1, args.repeat)):
            det = cls(**params)
            t0 = time.perf_counter()
            s = det.score_batch(x)
            t_batch = min(t_batch, time.perf_counter() - t0)
            det = cls(**params)
            upd = det.update
            t0 = time.perf_counter()
            for v in xs:
                upd(v)
            t_stream = min(t_stream, time.perf_counter() - t0)
        fa = float(np.mean(s >= cls.alarm_threshold))
        label = name + (" (known range)" if params else "")
        label += " (default)" if name == uni.DEFAULT_DETECTOR and not params else ""
        rates[label] = n_stream / t_stream
        print(f"{label:<26} {n_batch / t_batch:14,.0f} {n_stream / t_stream:14,.0f} {fa:22.4%}", flush=True)
    if args.river_python:
        _river(args, stream_noise, stream_bits, rates)


PAIRS = (("page_hinkley", "river PageHinkley"), ("cusum", "river PageHinkley"),
         ("ewma", "river EWMean+EWVar z"), ("bernoulli_cusum", "river binary DDM"))


def _stream_rate(name: str, xs: list[float]) -> float:
    upd = REGISTRY[name]().update
    t0 = time.perf_counter()
    for v in xs:
        upd(v)
    return len(xs) / (time.perf_counter() - t0)


def _river(args: argparse.Namespace, noise: np.ndarray, bits: np.ndarray, rates: dict[str, float]) -> None:
    """Time river's equivalents on the same streaming arrays, in river's venv, interleaved with ours.

    Each round times our four simple detectors, then river's equivalents (one subprocess run); the best
    of ``--repeat`` rounds is kept for both, so a change of machine load hits both sides alike.
    """
    ours = {name: 0.0 for name, _ in PAIRS}
    theirs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", noise)
        np.save(Path(tmp) / "b.npy", bits)
        peer = Path(__file__).with_name("_river_peer.py")
        for _ in range(max(1, args.repeat)):
            for name in ours:
                xs = (bits if REGISTRY[name].input_kind == "binary" else noise).tolist()
                ours[name] = max(ours[name], _stream_rate(name, xs))
            res = subprocess.run([args.river_python, str(peer), str(Path(tmp) / "x.npy"),
                                  str(Path(tmp) / "b.npy"), "1"], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(f"river peer failed: {res.stderr.strip()[-500:]}", file=sys.stderr)
                return
            for k, v in json.loads(res.stdout).items():
                theirs[k] = max(theirs.get(k, 0.0), v)
    print(f"\n{'streaming, interleaved':<32} {'ours pts/s':>12} {'river pts/s':>12} {'ours / river':>13}")
    for name, peer_name in PAIRS:
        r, p = ours[name], theirs[peer_name]
        print(f"{name + ' vs ' + peer_name.removeprefix('river '):<32} {r:12,.0f} {p:12,.0f} {r / p:12.2f}x")


if __name__ == "__main__":
    main()
