"""What watching costs the watched server: the sidecar's proxy against direct calls, and the pull path.

    python benchmarks/proxy_benchmark.py proxy [--requests 2000] [--rounds 3]
    python benchmarks/proxy_benchmark.py pull  [--seconds 20]

``proxy``: a tiny OIP v2 upstream (numpy classifier, KServe-style /metrics) is started, then the real
``incidentd sidecar --server-kind kserve --proxy-listen`` in front of it (its cycle decoding what the proxy
captured every 0.5 s). 4 concurrent clients send the same requests directly and through the proxy, in
alternating rounds of the same run; reported: p50/p99 of each, the p99 the proxy adds, the throughput
ratio, and the sidecar process' peak RSS while the clients flood it with 256 KiB payloads (the capture
buffer is bounded; what it drops is counted on the sidecar's /metrics).

``pull``: the demo model server (``incidentd model-server``) under 4 clients, without a sidecar and with
``incidentd sidecar`` (our own kind, reading /predictions pages) at 0.5 s and 5 s; reported: the server's
p99 as the clients see it, and the increase the sidecar causes.

Numbers depend on the machine; run it on an otherwise idle one. Everything listens on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no answer from {url}")


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}".rstrip(":")}
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO)  # noqa: SIM115


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# ---- the upstream used by `proxy` ---------------------------------------------------------------------
def serve_upstream(port: int) -> None:
    import uvicorn
    from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    w = np.random.default_rng(0).normal(size=(64, 10))
    hist = Histogram("request_predict_seconds", "predict latency", ["model_name"])

    async def infer(request: Request) -> JSONResponse:
        t = time.perf_counter()
        body = await request.json()
        t0 = body["inputs"][0]
        x = np.asarray(t0["data"], dtype=float).reshape(t0["shape"])
        y = np.argmax(x @ w[: x.shape[1]], axis=1)
        hist.labels("tiny").observe(time.perf_counter() - t)
        return JSONResponse({"model_name": "tiny", "model_version": "1", "outputs": [
            {"name": "predict", "shape": [len(y)], "datatype": "INT64", "data": y.tolist()}]})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(routes=[Route("/v2/models/tiny/infer", infer, methods=["POST"]), Route("/metrics", metrics)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- load ---------------------------------------------------------------------------------------------
def load(url: str, path: str, bodies: list[bytes], per_client: int) -> tuple[np.ndarray, float]:
    """CLIENTS threads, each sending ``per_client`` requests back to back; (latencies, requests/s)."""
    lat: list[list[float]] = [[] for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS + 1)

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as c:
            c.post(path, content=bodies[0])  # connect and warm up
            barrier.wait()
            for k in range(per_client):
                t = time.perf_counter()
                r = c.post(path, content=bodies[(i + k) % len(bodies)])
                lat[i].append(time.perf_counter() - t)
                if r.status_code >= 500:
                    raise SystemExit(f"{url}{path}: HTTP {r.status_code}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    arr = np.concatenate([np.asarray(x) for x in lat])
    return arr, arr.size / wall


def q(a: np.ndarray, p: float) -> float:
    return float(np.quantile(a, p)) * 1e3


def run_proxy(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="incidentd-proxy-bench-"))
    up_port, proxy_port, sc_port = free_port(), free_port(), free_port()
    up = spawn([sys.executable, __file__, "_upstream", str(up_port)], tmp / "upstream.log")
    sc = None
    try:
        wait_http(f"http://127.0.0.1:{up_port}/metrics", up)
        sc = spawn([sys.executable, "-m", "incidentd.cli", "sidecar", "--server-kind", "kserve",
                    "--target", f"http://127.0.0.1:{up_port}", "--proxy-listen", f"127.0.0.1:{proxy_port}",
                    "--port", str(sc_port), "--interval", str(args.interval), "--gpu", "none", "--log-level", "WARNING"],
                   tmp / "sidecar.log")
        wait_http(f"http://127.0.0.1:{sc_port}/healthz", sc)
        rng = np.random.default_rng(1)
        path = "/v2/models/tiny/infer"
        bodies = [json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64",
                                          "data": rng.normal(size=64).round(4).tolist()}]}).encode() for _ in range(64)]
        direct_url, proxy_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"
        per = args.requests // CLIENTS
        d_lat: list[np.ndarray] = []
        p_lat: list[np.ndarray] = []
        d_tp: list[float] = []
        p_tp: list[float] = []
        for r in range(args.rounds):
            order = [(direct_url, d_lat, d_tp), (proxy_url, p_lat, p_tp)]
            for url, lats, tps in order if r % 2 == 0 else order[::-1]:
                a, tp = load(url, path, bodies, per)
                lats.append(a)
                tps.append(tp)
        d, p = np.concatenate(d_lat), np.concatenate(p_lat)
        proc = psutil.Process(sc.pid)
        rss0 = proc.memory_info().rss
        big = [json.dumps({"inputs": [{"name": "x", "shape": [512, 64], "datatype": "FP64",
                                       "data": rng.normal(size=512 * 64).round(3).tolist()}]}).encode() for _ in range(4)]
        peak = rss0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proc.memory_info().rss)
                done.wait(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        load(proxy_url, path, big, args.flood // CLIENTS)
        done.set()
        sampler.join()
        metrics = httpx.get(f"http://127.0.0.1:{sc_port}/metrics").text
        dropped = next((float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith("incidentd_sidecar_payloads_dropped_total")), float("nan"))
        return {
            "clients": CLIENTS,
            "requests_each": int(d.size),
            "direct_p50_ms": q(d, 0.5), "direct_p99_ms": q(d, 0.99),
            "proxy_p50_ms": q(p, 0.5), "proxy_p99_ms": q(p, 0.99),
            "added_p99_ms": q(p, 0.99) - q(d, 0.99),
            "throughput_direct_rps": float(np.mean(d_tp)), "throughput_proxy_rps": float(np.mean(p_tp)),
            "throughput_ratio": float(np.mean(p_tp) / np.mean(d_tp)),
            "flood_payload_bytes": len(big[0]), "flood_requests": args.flood,
            "sidecar_rss_before_flood_mib": rss0 / 2**20, "sidecar_rss_peak_flood_mib": peak / 2**20,
            "flood_pairs_dropped": dropped,
        }
    finally:
        if sc is not None:
            stop(sc)
        stop(up)


def run_pull(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="incidentd-pull-bench-"))
    port = free_port()
    ms = spawn([sys.executable, "-m", "incidentd.cli", "model-server", "--registry", str(tmp / "registry"),
                "--port", str(port), "--device", "cpu", "--log-level", "warning"], tmp / "model-server.log")
    out: dict = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", ms, timeout=600)
        rng = np.random.default_rng(2)
        bodies = [json.dumps({"inputs": [rng.uniform(0, 16, size=64).round(2).tolist()]}).encode() for _ in range(64)]
        url = f"http://127.0.0.1:{port}"
        load(url, "/predict", bodies, 200)  # warm up, and fill the prediction log
        # Measure p99 over a fixed number of requests, alternating conditions so drift in the machine's load
        # hits all of them alike.
        results: dict[str, list[np.ndarray]] = {"none": [], "0.5": [], "5": []}
        for r in range(args.rounds):
            for cond in ("none", "0.5", "5") if r % 2 == 0 else ("5", "0.5", "none"):
                sc = None
                if cond != "none":
                    scp = free_port()
                    sc = spawn([sys.executable, "-m", "incidentd.cli", "sidecar", "--target", url, "--port", str(scp),
                                "--interval", cond, "--gpu", "none", "--log-level", "WARNING"], tmp / f"sidecar-{cond}.log")
                    wait_http(f"http://127.0.0.1:{scp}/healthz", sc)
                try:
                    a, _ = load(url, "/predict", bodies, args.requests // CLIENTS)
                finally:
                    if sc is not None:
                        stop(sc)
                results[cond].append(a)
        base = q(np.concatenate(results["none"]), 0.99)
        out = {"p99_no_sidecar_ms": base}
        for cond in ("0.5", "5"):
            p99 = q(np.concatenate(results[cond]), 0.99)
            out[f"p99_sidecar_{cond}s_ms"] = p99
            out[f"p99_increase_{cond}s_pct"] = 100 * (p99 - base) / base
        return out
    finally:
        stop(ms)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "_upstream":
        serve_upstream(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--requests", type=int, default=2000, help="per condition and round, over all clients")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--flood", type=int, default=200, help="256 KiB requests sent through the proxy")
    p.add_argument("--interval", type=float, default=0.5, help="the sidecar's cycle (decodes what was captured)")
    u = sub.add_parser("pull")
    u.add_argument("--requests", type=int, default=2000)
    u.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    res = run_proxy(args) if args.what == "proxy" else run_pull(args)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}, indent=2))


if __name__ == "__main__":
    main()
