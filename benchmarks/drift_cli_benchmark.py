"""Whole-process drift on a CSV pair: `incidentd drift --json` vs an equivalent Evidently script.

    PYTHONPATH=. /work/venv-warm/bin/python benchmarks/drift_cli_benchmark.py \\
        --ours-python /work/venv-warm/bin/python --peer-python /work/venv-bench/bin/python

Both processes start cold, read the two CSV files, test every column and print one JSON object; the
wall time of each whole process is compared. Also checks that `incidentd drift` did not import torch.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EVIDENTLY_SCRIPT = r'''
import json, sys
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref = pd.read_csv(sys.argv[1]); cur = pd.read_csv(sys.argv[2])
snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
print(json.dumps(snap.dict())[:200])
'''

OURS_SCRIPT = r'''
import sys
from incidentd.commands.drift import drift
from pathlib import Path
drift(reference=Path(sys.argv[1]), current=Path(sys.argv[2]), as_json=True, tests="ks,chi2", alpha=0.01,
      correction="fdr_bh", categorical="", plot=None)
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
'''


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
    return dt, p.stdout, p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--ours-python", default=sys.executable)
    ap.add_argument("--peer-python", default="/work/venv-bench/bin/python")
    args = ap.parse_args()
    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        names = [f"f{i}" for i in range(args.features)]
        ref = pd.DataFrame(rng.normal(size=(args.rows, args.features)), columns=names)
        cur = pd.DataFrame(rng.normal(size=(args.rows, args.features)), columns=names)
        cur.iloc[:, : args.features // 5] += 0.02
        rp, cp = Path(tmp, "ref.csv"), Path(tmp, "cur.csv")
        ref.to_csv(rp, index=False)
        cur.to_csv(cp, index=False)
        print(f"CSV pair: {args.rows} x {args.features}, {rp.stat().st_size / 2**20:.0f} MiB each", file=sys.stderr)
        t_ours, _, err = run([args.ours_python, "-c", OURS_SCRIPT, str(rp), str(cp)], env)
        print(f"incidentd drift --json (whole process): {t_ours:.2f}s; {err.strip().splitlines()[-1]}")
        t_ev, _, _ = run([args.peer_python, "-c", EVIDENTLY_SCRIPT, str(rp), str(cp)], env)
        print(f"Evidently DataDriftPreset script (whole process): {t_ev:.2f}s")
        print(f"ratio: incidentd is {t_ev / t_ours:.1f}x faster")


if __name__ == "__main__":
    main()
