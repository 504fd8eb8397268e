"""Throughput of every registered detector (streaming and vectorized batch) and false alarms on noise.

    PYTHONPATH=. /work/venv-warm/bin/python benchmarks/detector_benchmark.py [--points 1000000]

Single process, single thread (OMP/BLAS threads do not matter: the paths are elementwise or lfilter).
Each rate is the best of ``--repeat`` runs on fresh detectors: on a shared machine the slowest runs
measure the neighbours, not the detector.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import detectors.rates  # noqa: F401  (registers BernoulliCUSUM)
import detectors.univariate as uni
from detectors.base import REGISTRY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000, help="batch points per detector")
    ap.add_argument("--stream-points", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per detector; the best is reported")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'detector':<20} {'batch pts/s':>14} {'stream pts/s':>14} {'false alarms (N(0,1))':>22}")
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        binary = cls.input_kind == "binary"
        n_batch = args.points if name not in ("bocpd", "anomaly_likelihood", "robust_z") else args.points // 10
        x = (rng.random(n_batch) < 0.05).astype(float) if binary else rng.normal(size=n_batch)
        n_stream = min(args.stream_points, n_batch) if name != "bocpd" else 5_000
        xs = x[:n_stream].tolist()
        t_batch = t_stream = float("inf")
        for _ in range(max(1, args.repeat)):
            det = cls()
            t0 = time.perf_counter()
            s = det.score_batch(x)
            t_batch = min(t_batch, time.perf_counter() - t0)
            det = cls()
            upd = det.update
            t0 = time.perf_counter()
            for v in xs:
                upd(v)
            t_stream = min(t_stream, time.perf_counter() - t0)
        fa = float(np.mean(s >= cls.alarm_threshold))
        mark = " (default)" if name == uni.DEFAULT_DETECTOR else ""
        print(f"{name + mark:<20} {n_batch / t_batch:14,.0f} {n_stream / t_stream:14,.0f} {fa:22.4%}")


if __name__ == "__main__":
    main()
