"""How fast hostile input is answered, next to a well-formed request in the same run (issue 12).

    PYTHONPATH=. $VENV/bin/python benchmarks/hostile_input_benchmark.py [--repeat 15] [--out benchmarks/results/hostile]

Starts a real ``incidentd serve`` (SQLite in a temporary directory, loopback, an API key made with the
keys library) and sends, over HTTP, ``--repeat`` times each: a small valid webhook (the peer), then the
hostile bodies the service must refuse (100 MB body without and with a declared length, JSON nested
100,000 deep, 100,000 alerts, invalid UTF-8, NaN/Infinity/1e308 in ``/events``), and the largest accepted
payload (1,000 alerts, one transaction). Reported per case: the status, the median and p90 time to the full
answer, and the ratio of the median to the valid webhook's. The issue's bound is 100 ms for the refusals
and well under a second for the bounded payload; the ratios are what to compare across machines (the
service and this client share the cores). Writes ``hostile.json`` and ``hostile.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

MiB = 1024 * 1024
CHUNK = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _endless(total: int) -> Iterator[bytes]:
    yield b'{"model": "m", "kind": "deploy", "description": "'
    block = b" " * CHUNK
    for _ in range(total // CHUNK):
        yield block


def _webhook(n: int, fingerprint: str = "f") -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "A", "model": "m"}, "annotations": {},
               "startsAt": "2026-05-01T12:00:00Z", "fingerprint": f"{fingerprint}{i}"} for i in range(n)]
    return json.dumps({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
                       "alerts": alerts}).encode()


def cases() -> dict[str, tuple[str, Callable[[int], object], dict[str, str]]]:
    """name -> (path, body for round i, extra headers)."""
    def once(body: bytes) -> Callable[[int], object]:
        return lambda i: body

    hundred_k = _webhook(1)[:-3] + b"," + b",".join([json.dumps(
        {"status": "firing", "labels": {"alertname": "A", "model": "m"}, "startsAt": "2026-05-01T12:00:00Z",
         "fingerprint": "x"}).encode()] * 100_000) + b"]}"
    return {
        "valid webhook (1 alert)": ("/webhooks/alertmanager", lambda i: _webhook(1, f"ok{i}-"), {}),
        "100 MB body, streamed": ("/events", lambda i: _endless(100 * MiB), {}),
        "100 MB body, declared length": ("/webhooks/alertmanager", lambda i: _endless(100 * MiB),
                                         {"content-length": str(100 * MiB)}),
        "JSON nested 100,000 deep": ("/webhooks/alertmanager", once(b"[" * 100_000 + b"]" * 100_000), {}),
        "100,000 alerts": ("/webhooks/alertmanager", once(hundred_k), {}),
        "invalid UTF-8": ("/events", once(b'{"model": "m\xff\xfe", "kind": "deploy"}'), {}),
        "at = NaN": ("/events", once(b'{"model": "m", "kind": "deploy", "at": NaN}'), {}),
        "at = Infinity": ("/events", once(b'{"model": "m", "kind": "deploy", "at": Infinity}'), {}),
        "at = 1e308": ("/events", once(b'{"model": "m", "kind": "deploy", "at": 1e308}'), {}),
        "1,000 alerts (accepted)": ("/webhooks/alertmanager", lambda i: _webhook(1000, f"big{i}-"), {}),
    }


def start_service(work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    from incidentd.auth.keys import create_key
    from incidentd.auth.scopes import Scope
    from incidentd.store import Store

    db = work / "incidentd.db"
    store = Store(db)
    key = create_key(store, "bench", frozenset({Scope.INGEST, Scope.READ})).key
    store.close()
    port = _free_port()
    (work / "incidentd.yaml").write_text(f"host: 127.0.0.1\nport: {port}\ndatabase: {db}\nmodels: [m]\n")
    log = open(work / "service.log", "wb")   # noqa: SIM115 - kept for the process' life
    proc = subprocess.Popen([sys.executable, "-m", "incidentd.cli", "serve", "--config", str(work / "incidentd.yaml"),
                             "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"incidentd serve exited {proc.returncode}; see {work / 'service.log'}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("incidentd serve did not start in 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="incidentd-hostile-"))
    proc, url, key = start_service(work)
    results: dict[str, dict[str, Any]] = {}
    try:
        with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}",
                                                             "content-type": "application/json"}) as c:
            for name, (path, body, headers) in cases().items():
                times, statuses = [], set()
                for i in range(args.repeat):
                    t0 = time.perf_counter()
                    r = c.post(path, content=body(i), headers=headers)   # type: ignore[arg-type]
                    _ = r.content
                    times.append(time.perf_counter() - t0)
                    statuses.add(r.status_code)
                times.sort()
                results[name] = {"status": sorted(statuses), "median_ms": round(1000 * statistics.median(times), 2),
                                 "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 2)}
                print(f"  {name:<30} status {sorted(statuses)}  median {results[name]['median_ms']:8.2f} ms  "
                      f"p90 {results[name]['p90_ms']:8.2f} ms", file=sys.stderr, flush=True)
    finally:
        proc.terminate()
        proc.wait(20)
    peer = float(results["valid webhook (1 alert)"]["median_ms"])
    for res in results.values():
        res["ratio_to_valid"] = round(float(res["median_ms"]) / peer, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hostile.json").write_text(json.dumps({"repeat": args.repeat, "cases": results}, indent=1))
    print(f"{'case':<30} {'status':<10} {'median ms':>10} {'p90 ms':>9} {'x valid':>8}")
    for name, res in results.items():
        print(f"{name:<30} {str(res['status']):<10} {res['median_ms']:>10} {res['p90_ms']:>9} "
              f"{res['ratio_to_valid']:>8}")
    _plot(results, args.out / "hostile.png")
    print(f"wrote {args.out / 'hostile.json'} and {args.out / 'hostile.png'}", file=sys.stderr)


def _plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    med = [float(results[n]["median_ms"]) for n in names]
    p90 = [float(results[n]["p90_ms"]) for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = range(len(names))
    ax.barh(y, p90, color="#c7d7ea", label="p90")
    ax.barh(y, med, color="#3b6ea5", label="median")
    ax.axvline(100, color="#b33", linestyle="--", label="100 ms")
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlabel("time to the full answer (ms), over loopback HTTP")
    ax.set_title("incidentd: hostile input is refused fast")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
