"""Streaming throughput of river's equivalents of our simple detectors (run in river's own venv).

    /path/to/river-venv/bin/python benchmarks/_river_peer.py DATA.npy BINARY.npy REPEAT

Prints one JSON object: {peer name: points per second (best of REPEAT)}. ``detector_benchmark.py
--river-python`` calls this right after timing our detectors on the same arrays, so both run under the
same machine load. Only river and numpy are imported here (not the repository's code).
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable

import numpy as np


def _rate(make: Callable[[], Callable[[float], object]], xs: list[float], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        step = make()
        t0 = time.perf_counter()
        for v in xs:
            step(v)
        best = min(best, time.perf_counter() - t0)
    return len(xs) / best


def main() -> None:
    from river import drift, stats  # type: ignore[import-not-found]  # river lives in its own venv

    xs = np.load(sys.argv[1]).tolist()
    bits = np.load(sys.argv[2]).tolist()
    repeat = int(sys.argv[3])

    def page_hinkley() -> Callable[[float], object]:
        step: Callable[[float], object] = drift.PageHinkley().update
        return step

    def ew_z() -> Callable[[float], object]:
        # the EWMA z-score, as one would write it with river's exponentially weighted statistics
        mean, var = stats.EWMean(fading_factor=0.05), stats.EWVar(fading_factor=0.05)

        def step(x: float) -> float:
            sd = math.sqrt(var.get())
            z = (x - mean.get()) / sd if sd > 0 else 0.0
            mean.update(x)
            var.update(x)
            return z
        return step

    def ddm() -> Callable[[float], object]:
        step: Callable[[float], object] = drift.binary.DDM().update
        return step

    out = {"river PageHinkley": _rate(page_hinkley, xs, repeat),
           "river EWMean+EWVar z": _rate(ew_z, xs, repeat),
           "river binary DDM": _rate(ddm, bits, repeat)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
