"""Drift speed: incidentd's DriftSuite vs Evidently (DataDriftPreset), alibi-detect KSDrift and a scipy loop.

Run in the benchmark venv (see benchmarks/README.md):

    PYTHONPATH=. /work/venv-bench/bin/python benchmarks/drift_benchmark.py --rows 100000 --features 50

Every peer runs in the same process on the same arrays. The timed call is "compare current data held in
memory with a reference fitted earlier" for everyone: our fit (sorting the reference, once per model
version) is reported separately; alibi-detect's KSDrift is likewise constructed (reference stored) before
timing; Evidently has no fit step, so its whole run is timed. Peak memory is tracemalloc's peak during one
extra, untimed call (numpy and pandas allocations are traced).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any], repeat: int = 1, memory: bool = True) -> tuple[float, float, Any]:
    """(best seconds over `repeat` plain runs, tracemalloc peak MiB of one extra traced run, result).

    Timing runs are not traced (tracemalloc slows allocation-heavy Python code, which would be unfair
    to the peers); memory is measured in a separate run.
    """
    best = float("inf")
    out = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    peak = float("nan")
    if memory:
        gc.collect()
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return best, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--skip", default="", help="comma-separated peers to skip: evidently,alibi,scipy")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-evidently-memory", action="store_true", help="skip the traced Evidently run")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    n, d = args.rows, args.features
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(n, d))
    cur = rng.normal(size=(n, d))
    cur[:, : d // 5] += 0.02            # a small drift in a fifth of the features
    names = [f"f{i}" for i in range(d)]
    print(f"reference {n} x {d}, current {n} x {d}", file=sys.stderr)

    from detectors.drift import DriftSuite

    suite = DriftSuite(tests=("ks",))
    t_fit, _, _ = timed(lambda: suite.fit(ref, feature_names=names), memory=False)
    t_ours, mem_ours, report = timed(lambda: suite.compare(cur), args.repeat)
    rows = [("incidentd DriftSuite(ks).compare", t_ours, mem_ours)]
    print(f"incidentd compare: {t_ours:.3f}s, peak {mem_ours:.1f} MiB", file=sys.stderr, flush=True)
    print(f"incidentd fit (sort reference, once per model version): {t_fit:.3f}s", file=sys.stderr)

    results: dict[str, tuple[float, float]] = {}
    adjacent: dict[str, float] = {}

    def ours_again() -> float:
        # the machine may be shared: time ours again right before each peer and use that pair's ratio
        return timed(lambda: suite.compare(cur), args.repeat, memory=False)[0]

    if "scipy" not in skip:
        from scipy import stats

        def scipy_loop() -> list[Any]:
            return [stats.ks_2samp(ref[:, j], cur[:, j]) for j in range(d)]

        adjacent["scipy.stats.ks_2samp loop"] = ours_again()
        t, m, sp = timed(scipy_loop, args.repeat)
        rows.append(("scipy.stats.ks_2samp loop", t, m))
        print(f"scipy.stats.ks_2samp loop: {t:.3f}s, peak {m:.1f} MiB", file=sys.stderr, flush=True)
        results["scipy"] = (t, m)
        stat_err = max(abs(f.statistic - s.statistic) for f, s in zip(report.features, sp))
        p_rel = max(abs(f.p_value - s.pvalue) / max(s.pvalue, 1e-300) for f, s in zip(report.features, sp))
        print(f"max |KS statistic - scipy| = {stat_err:.3g}; max relative p-value difference = {p_rel:.3g}")
        assert stat_err <= 1e-9 and p_rel <= 1e-6, "KS results differ from scipy"
    if "alibi" not in skip:
        try:
            from alibi_detect.cd import KSDrift

            det = KSDrift(ref.astype(np.float64), p_val=0.05)
            adjacent["alibi-detect KSDrift.predict"] = ours_again()
            t, m, _ = timed(lambda: det.predict(cur), args.repeat)
            rows.append(("alibi-detect KSDrift.predict", t, m))
            print(f"alibi-detect KSDrift.predict: {t:.3f}s, peak {m:.1f} MiB", file=sys.stderr, flush=True)
            results["alibi"] = (t, m)
        except Exception as exc:  # noqa: BLE001 - a peer failing to run is reported, not fatal
            print(f"alibi-detect skipped: {exc!r}", file=sys.stderr)
    if "evidently" not in skip:
        try:
            import pandas as pd
            from evidently import Report
            from evidently.presets import DataDriftPreset

            ref_df = pd.DataFrame(ref, columns=names)
            cur_df = pd.DataFrame(cur, columns=names)

            def ev() -> Any:
                return Report([DataDriftPreset()]).run(current_data=cur_df, reference_data=ref_df)

            adjacent["Evidently DataDriftPreset (0.7, default tests)"] = ours_again()
            t, m, _ = timed(ev, 1, memory=not args.no_evidently_memory)
            rows.append(("Evidently DataDriftPreset (0.7, default tests)", t, m))
            print(f"Evidently DataDriftPreset (0.7, default tests): {t:.3f}s, peak {m:.1f} MiB", file=sys.stderr, flush=True)
            results["evidently"] = (t, m)
        except Exception as exc:  # noqa: BLE001
            print(f"Evidently skipped: {exc!r}", file=sys.stderr)

    print(f"\n{'run':<48} {'seconds':>9} {'peak MiB':>9} {'ours (adjacent)':>16} {'ours x faster':>14} "
          f"{'mem ratio':>9}")
    for name, t, m in rows:
        base = adjacent.get(name, t_ours)
        print(f"{name:<48} {t:9.3f} {m:9.1f} {base:16.3f} {t / base:14.1f} {m / max(mem_ours, 1e-9):9.2f}")


if __name__ == "__main__":
    main()
