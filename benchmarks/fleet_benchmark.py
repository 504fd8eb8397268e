"""Fleet scale on one machine: scrape and detection cost for 1, 10, 100 and 500 models x 50 features.

    PYTHONPATH=. $VENV/bin/python benchmarks/fleet_benchmark.py [--models 1 10 100 500] [--features 50]
        [--history 1800] [--repeat 1] [--out benchmarks/results/fleet]

Each fleet size runs in a fresh process so its RSS is its own. The sidecars are synthesised in memory:
every model's exposition has the metric families a real sidecar exposes (``collector/exposition.py``),
with ``--features`` features each carrying a drift statistic and a p-value, and values that move from
scrape to scrape. They are served to the real ``Scraper`` through an in-memory HTTP transport, so the
scrape path (HTTP client, parse, ingest) is the service's own. The embedded store is filled with
``--history`` seconds of scrapes at the default 10 s interval (the clock is injected), then detection
cycles of the real ``DetectionLoop`` (default catalog, real SQLite store, no remediation) run on it.

Reported per size: wall and CPU time of one scrape round (median of the last 10), detection cycle time
(median of the measured cycles), CPU seconds per cycle, per-model cost of each, RSS growth per model,
stored points and bytes per point. Targets (issue 16): cycle at 500 models within 10 s; per-model cost at
500 within 1.5x of at 10; RSS growth <= 2 MiB per model. The per-model cost is judged on CPU seconds (what a
model costs the machine); wall times are printed beside them, and on a shared machine they carry the other
tenants' load. With ``--repeat k`` every size runs k times, interleaved, and each ratio is printed as the
median with the spread (min-max) of the k runs. A PNG of the figures is written next to the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERVAL = 10.0


def exposition(model: str, features: int, k: int) -> str:
    """One sidecar's /metrics at scrape ``k``: the families a real sidecar exposes, values varying with k."""
    mv = f'model="{model}",version="v1"'
    j = (k * 7919 + hash(model) % 997) % 100 / 1000.0        # small deterministic jitter
    lines = [
        f"model_up{{{mv}}} 1",
        f'model_latency_seconds{{{mv},quantile="0.5"}} {0.02 + j / 10:.5f}',
        f'model_latency_seconds{{{mv},quantile="0.9"}} {0.04 + j / 10:.5f}',
        f'model_latency_seconds{{{mv},quantile="0.99"}} {0.08 + j / 10:.5f}',
        f"model_throughput_requests_per_second{{{mv}}} {50 + j * 10:.3f}",
        f"model_requests_total{{{mv}}} {k * 500}",
        f'model_request_errors_total{{{mv},reason="exception"}} {k}',
        f"model_predictions_labeled_total{{{mv}}} {k * 100}",
        f"model_predictions_correct_total{{{mv}}} {k * 95}",
        f"model_accuracy_ratio{{{mv}}} {0.95 - j:.4f}",
        f"model_label_lag_seconds{{{mv}}} {5 + j:.3f}",
        f"model_nonfinite_outputs_total{{{mv}}} 0",
        f"model_weights_nonfinite{{{mv}}} 0",
        f"model_weights_abs_max{{{mv}}} 3.5",
        f"model_input_missing_ratio{{{mv}}} {j / 10:.5f}",
        f"model_oldest_request_age_seconds{{{mv}}} {j:.4f}",
        f"model_drift_window_rows{{{mv}}} 2000",
        f"model_drifted_features{{{mv}}} 0",
        f"model_unit_change_features{{{mv}}} 0",
        f"model_unseen_category_features{{{mv}}} 0",
        f"model_input_drift_detected{{{mv}}} 0",
        f'model_prediction_drift_statistic{{{mv},test="psi"}} {0.01 + j / 10:.5f}',
        f"model_host_cpu_usage_ratio{{{mv}}} {0.3 + j:.4f}",
        f"model_host_memory_usage_ratio{{{mv}}} {0.4 + j:.4f}",
        f"model_process_up{{{mv}}} 1",
        f"model_process_cpu_usage_ratio{{{mv}}} {0.1 + j:.4f}",
        f"model_process_resident_memory_bytes{{{mv}}} {400_000_000 + k % 50 * 1000}",
    ]
    for f in range(features):
        lab = f'{mv},feature="f{f:03d}",test="ks"'
        lines.append(f"model_feature_drift_statistic{{{lab}}} {0.02 + (f % 7) / 1000 + j / 10:.5f}")
        lines.append(f"model_feature_drift_p_value{{{lab}}} {0.5 + j:.5f}")
    return "\n".join(lines) + "\n"


def run_one(models: int, features: int, history: float, cycles: int) -> dict:
    import httpx
    import psutil

    from diagnosis.catalog import default_catalog
    from diagnosis.rules import DEFAULT_PACK, RuleEngine
    from incidentd.config import Settings
    from incidentd.pipeline import DetectionLoop
    from incidentd.store import Store
    from incidentd.tsdb import EmbeddedStore, Scraper

    proc = psutil.Process()
    names = [f"m{i:04d}" for i in range(models)]
    variants = 6                 # distinct expositions per model, cycled (generation is not what we measure)
    texts = {n: [exposition(n, features, k) for k in range(variants)] for n in names}
    clock = {"k": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        model = request.url.host.split(".")[0]
        return httpx.Response(200, text=texts[model][clock["k"] % variants])

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database=Path(tmp) / "bench.db", models=[], scrape_targets=[])
        max_points = int(settings.retention_seconds / INTERVAL) + 10
        tsdb = EmbeddedStore(settings.retention_seconds, max_points=max_points)
        client = httpx.Client(transport=httpx.MockTransport(handler))
        scraper = Scraper(tsdb, [f"http://{n}.sidecar:9000" for n in names], client=client)
        store = Store(settings.database)
        loop = DetectionLoop(settings, tsdb, store, RuleEngine.load([DEFAULT_PACK]), default_catalog(), None,
                             step=INTERVAL)
        rss0 = proc.memory_info().rss
        t = 1_700_000_000.0
        rounds = int(history / INTERVAL)
        scrape_s: list[float] = []
        scrape_cpu_s: list[float] = []
        for k in range(rounds):
            clock["k"] = k
            c0, t0 = time.process_time(), time.perf_counter()
            scraper.scrape_once(now=t)
            scrape_s.append(time.perf_counter() - t0)
            scrape_cpu_s.append(time.process_time() - c0)
            t += INTERVAL
        tsdb.expire(t)
        loop.cycle(now=t)                               # first cycle reads each model's full horizon
        cycle_s, cpu_s = [], []
        for _ in range(cycles):
            clock["k"] += 1
            scraper.scrape_once(now=t)
            c0, w0 = time.process_time(), time.perf_counter()
            loop.cycle(now=t)
            cycle_s.append(time.perf_counter() - w0)
            cpu_s.append(time.process_time() - c0)
            t += INTERVAL
        rss1 = proc.memory_info().rss
        points = tsdb.point_count()
        result = {
            "models": models, "features": features, "history_s": history,
            "series": tsdb.series_count(), "points": points,
            "array_bytes_per_point": tsdb.array_bytes() / max(points, 1),
            "scrape_s": statistics.median(scrape_s[-10:]),
            "scrape_cpu_s": statistics.median(scrape_cpu_s[-10:]),
            "scrape_cpu_s_per_model": statistics.median(scrape_cpu_s[-10:]) / models,
            "cycle_s": statistics.median(cycle_s), "cycle_cpu_s": statistics.median(cpu_s),
            "cycle_s_per_model": statistics.median(cycle_s) / models,
            "cpu_s_per_model": statistics.median(cpu_s) / models,
            "scrape_s_per_model": statistics.median(scrape_s[-10:]) / models,
            "rss_growth_mib": (rss1 - rss0) / 2**20, "rss_growth_mib_per_model": (rss1 - rss0) / 2**20 / models,
            "rss_mib": rss1 / 2**20,
        }
        scraper.close()
        store.close()
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["models"] for r in results]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(n, [r["cycle_s"] for r in results], "o-", label="detection cycle")
    ax[0].plot(n, [r["scrape_s"] for r in results], "s-", label="scrape round")
    ax[0].axhline(INTERVAL, color="grey", ls="--", label="interval (10 s)")
    ax[0].set(xscale="log", yscale="log", xlabel="models", ylabel="seconds", title="Wall time per round")
    ax[1].plot(n, [1000 * r["cycle_s_per_model"] for r in results], "o-", label="cycle wall")
    ax[1].plot(n, [1000 * r["cpu_s_per_model"] for r in results], "^-", label="cycle CPU")
    ax[1].plot(n, [1000 * r["scrape_s_per_model"] for r in results], "s-", label="scrape wall")
    ax[1].plot(n, [1000 * r["scrape_cpu_s_per_model"] for r in results], "v-", label="scrape CPU")
    ax[1].set(xscale="log", xlabel="models", ylabel="ms per model", title="Cost per model")
    ax[2].plot(n, [r["rss_growth_mib_per_model"] for r in results], "o-")
    ax[2].axhline(2.0, color="grey", ls="--", label="target 2 MiB")
    ax[2].set(xscale="log", xlabel="models", ylabel="MiB per model", title="RSS growth per model")
    for a in ax:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def representative(runs: list[list[dict]]) -> list[dict]:
    """The run standing for the sweep in fleet.json and the plot: the one with the median scrape CPU ratio
    (500 vs 10 models), or the middle run when those sizes were not both measured."""
    def key(rs: list[dict]) -> float:
        by = {r["models"]: r for r in rs}
        return by[500]["scrape_cpu_s_per_model"] / by[10]["scrape_cpu_s_per_model"] if 500 in by and 10 in by else 0.0
    return sorted(runs, key=key)[len(runs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[1, 10, 100, 500])
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--history", type=float, default=1800.0, help="seconds of scrapes before measuring")
    ap.add_argument("--cycles", type=int, default=5, help="detection cycles measured per size")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size (interleaved), for the spread")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fleet"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.features, args.history, args.cycles)))
        return
    runs: list[list[dict]] = []
    for rep in range(args.repeat):
        results = []
        for n in args.models:
            cmd = [sys.executable, __file__, "--one", str(n), "--features", str(args.features),
                   "--history", str(args.history), "--cycles", str(args.cycles)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results.append(r)
            print(f"[run {rep + 1}] {n:>4} models: scrape {1000 * r['scrape_s_per_model']:.3f} ms/model"
                  f" (cpu {1000 * r['scrape_cpu_s_per_model']:.3f})"
                  f"  cycle {r['cycle_s']:.3f}s (cpu {r['cycle_cpu_s']:.3f}s)"
                  f"  {1000 * r['cycle_s_per_model']:.2f} ms/model  RSS +{r['rss_growth_mib_per_model']:.3f} MiB/model"
                  f"  {r['points']} points, {r['array_bytes_per_point']:.1f} B/point", flush=True)
        runs.append(results)
    results = representative(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(results, indent=2))
    if args.repeat > 1:
        (args.out / "fleet_runs.json").write_text(json.dumps(runs, indent=2))
    plot(results, args.out / "fleet.png")
    bys = [{r["models"]: r for r in rs} for rs in runs]
    by = bys[0]

    def spread(values: list[float], fmt: str = "{:.2f}") -> str:
        med = statistics.median(values)
        if len(values) == 1:
            return fmt.format(med)
        return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"

    if 500 in by:
        print(f"cycle at 500 models: {spread([b[500]['cycle_s'] for b in bys])}s (target <= {INTERVAL:.0f}s)")
        print(f"scrape round at 500 models: {spread([b[500]['scrape_s'] for b in bys])}s "
              f"(target <= {INTERVAL:.0f}s)")
    if 500 in by and 10 in by:
        def ratio(key: str) -> str:
            return spread([b[500][key] / b[10][key] for b in bys])
        print("per-model cost 500 vs 10" + (f", median (min-max) of {len(bys)} runs" if len(bys) > 1 else "")
              + " (target <= 1.5x):")
        print(f"  scrape CPU {ratio('scrape_cpu_s_per_model')}x, cycle CPU {ratio('cpu_s_per_model')}x   "
              f"(judged)")
        print(f"  scrape wall {ratio('scrape_s_per_model')}x, cycle wall {ratio('cycle_s_per_model')}x")
    worst = max(r["rss_growth_mib_per_model"] for rs in runs for r in rs if r["models"] >= 10) \
        if len(results) > 1 else None
    if worst is not None:
        print(f"RSS growth per model, worst from 10 models up: {worst:.3f} MiB (target <= 2 MiB)")
    print(f"wrote {args.out / 'fleet.json'} and {args.out / 'fleet.png'}")


if __name__ == "__main__":
    main()
