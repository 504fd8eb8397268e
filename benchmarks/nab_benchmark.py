"""NAB scores of a detector on the shared NAB subset, on all files and on a fixed category split.

    PYTHONPATH=. /work/venv-warm/bin/python benchmarks/nab_benchmark.py --data ../shared/nab/data \\
        --labels ../shared/nab/labels/combined_windows.json [--detector surprise]

The split is fixed in advance (not chosen by score): "tune" = artificialWithAnomaly, realAWSCloudwatch,
realAdExchange; "check" = artificialNoAnomaly, realTraffic, realTweets. Each part is scored with its own
optimized threshold, as NAB does for a corpus. ``--per-category`` adds the standard score of each
category (again with its own threshold): a change should help both splits, and ideally each category.
"""
from __future__ import annotations

import argparse
import sys
import time

from detectors.evaluation.backtest import NabProtocol, backtest_nab, nab_files
from detectors.evaluation.nab import score_corpus

TUNE = ("artificialWithAnomaly", "realAWSCloudwatch", "realAdExchange")
CHECK = ("artificialNoAnomaly", "realTraffic", "realTweets")
PROFILES = (("standard", "standard"), ("reward_low_FP_rate", "low FP"), ("reward_low_FN_rate", "low FN"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/nab/data")
    ap.add_argument("--labels", default="../shared/nab/labels/combined_windows.json")
    ap.add_argument("--detector", action="append", help="registered name (repeatable); default: the default")
    ap.add_argument("--per-category", action="store_true", help="also print each category's standard score")
    ap.add_argument("--protocol", choices=("nab", "online", "both"), default="both",
                    help="nab: detectors get each file's value range and probationary period, as NAB's "
                         "harness gives them; online: neither (range learned online)")
    args = ap.parse_args()
    protocols = list(NabProtocol) if args.protocol == "both" else [NabProtocol(args.protocol)]
    for det, proto in ((d, p) for d in args.detector or [None] for p in protocols):
        t0 = time.perf_counter()
        results = backtest_nab(args.data, None, det, protocol=proto)
        elapsed = time.perf_counter() - t0
        files = nab_files(results, args.labels)
        rows = sum(len(r[0]) for r in results.values())
        line = [f"{det or 'default':<14} {proto.value:<7}"]
        for part, cats in (("all", None), ("tune", TUNE), ("check", CHECK)):
            sel = [f for f in files if cats is None or f.key.split("/")[0] in cats]
            sc = score_corpus(sel, [results[f.key][0] for f in sel])
            line.append(f"{part}: " + " / ".join(f"{sc[p].normalized:5.1f}" for p, _ in PROFILES))
        print("  ".join(line) + f"   ({rows / elapsed:,.0f} rows/s incl. CSV reading)", flush=True)
        if args.per_category:
            for cat in sorted({f.key.split("/")[0] for f in files}):
                sel = [f for f in files if f.key.split("/")[0] == cat]
                if not any(f.windows for f in sel):
                    continue                     # no windows: the normalized score is undefined
                sc = score_corpus(sel, [results[f.key][0] for f in sel], ("standard",))
                print(f"    {cat:<24} standard {sc['standard'].normalized:5.1f}", flush=True)
    print("(scores: standard / low FP / low FN)", file=sys.stderr)


if __name__ == "__main__":
    main()
