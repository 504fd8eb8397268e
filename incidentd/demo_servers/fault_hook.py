"""The demo's fault hook inside a third-party model server, and the digits MLP in numpy (demo and test code).

Copied next to a server's runtime or handler (MLServer's model folder, TorchServe's archive), so it needs
nothing but numpy and the standard library. ``fault_file`` names a JSON file
``{"fault": KIND, "params": {...}, "at": T}`` that the demo writes to inject a fault and removes to clear
it. A fault counts only for a model instance loaded before ``T``: it lives in the instance, as the demo
server's faults live in its process, so the server's own reload (MLServer's unload/load, TorchServe's
workers scaled to 0 and back), which incidentd calls a restart, ends it. Kinds:

- ``starvation`` (``threads``, ``seconds``): threads spinning in Python hold the GIL, so the process
  answers late and burns CPU;
- ``latency`` (``seconds``): every inference waits this long (a slow dependency);
- ``latency_creep`` (``ramp``, ``max_seconds``): every inference waits ``ramp`` seconds longer per second
  since the injection, up to ``max_seconds``;
- ``memory_balloon`` (``megabytes``, ``step_megabytes``, ``interval_seconds``) and ``memory_leak``
  (``rate`` MB/s up to ``limit_megabytes``): the instance holds written pages, freed when it is unloaded;
- ``disk_fill`` (``rate`` MB/s up to ``megabytes``): ballast written and fsynced next to the fault file
  (in ``ballast/``); the demo deletes it when it clears the fault.

incidentd's watching and acting code never imports this module.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


class DigitsMLP:
    """The registry checkpoint's MLP from ``weights.npz`` (incidentd.demo_servers.mlserver writes it): NaN
    inputs imputed by the training mean, ``x / input_scale``, Linear-ReLU layers, logits out."""

    def __init__(self, weights: Path) -> None:
        w = np.load(weights)
        self.layers = [(w[f"w{i}"], w[f"b{i}"]) for i in range(int(w["layers"]))]
        self.fill = w["fill"]
        self.scale = float(w["input_scale"])

    def logits(self, x: Any) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
        a = np.where(np.isnan(a), self.fill, a) / self.scale
        for i, (w, b) in enumerate(self.layers):
            a = a @ w.T + b
            if i < len(self.layers) - 1:
                a = np.maximum(a, 0.0)
        return a


class FaultState:
    """The instance's view of the fault file: re-read when it changes, ignored when older than the load."""

    def __init__(self, path: str | None, loaded_at: float) -> None:
        self.path = Path(path) if path else None
        self.loaded_at = loaded_at
        self._mtime: float | None = None
        self.fault: dict[str, Any] = {}
        self._spinners: list[threading.Thread] = []
        self._stop = threading.Event()
        self._held: list[bytearray] = []       # memory_balloon / memory_leak pages

    def refresh(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return self.fault
        self._mtime = mtime
        fault: dict[str, Any] = {}
        if mtime is not None:
            try:
                fault = json.loads(self.path.read_text() or "{}")
            except (OSError, ValueError):
                fault = {}
        if float(fault.get("at", 0.0)) < self.loaded_at:
            fault = {}   # injected before this instance was loaded: a reload ended it
        self._apply(fault)
        return self.fault

    def _apply(self, fault: dict[str, Any]) -> None:
        self.stop()
        self.fault = fault
        kind, params = fault.get("fault"), fault.get("params") or {}
        self._stop = threading.Event()
        if kind == "starvation":
            until = time.monotonic() + float(params.get("seconds", 300))
            for i in range(int(params.get("threads", 3))):
                self._thread(_spin, (self._stop, until), f"starve-{i}")
        elif kind == "memory_balloon":
            step = int(params.get("step_megabytes", 64)) * 2**20
            self._thread(self._grow, (int(params.get("megabytes", 768)), step,
                                      float(params.get("interval_seconds", 0.5))), "balloon")
        elif kind == "memory_leak":
            # grows a little at a time, like a leak, to its limit (and stops there: an exit would take
            # the whole MLServer down, which no model-level action could bring back)
            rate = float(params.get("rate", 2.0))
            self._thread(self._grow, (int(params.get("limit_megabytes", 1024)), int(rate * 0.25 * 2**20), 0.25),
                         "leak")
        elif kind == "disk_fill" and self.path is not None:
            self._thread(_fill, (self._stop, self.path.parent / "ballast", float(params.get("rate", 20.0)),
                                 int(params.get("megabytes", 1024))), "disk-fill")

    def _thread(self, target: Any, args: tuple[Any, ...], name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._spinners.append(t)

    def _grow(self, target_mb: int, step_bytes: int, interval: float) -> None:
        stop, held = self._stop, 0
        while not stop.is_set() and held < target_mb * 2**20:
            step = min(step_bytes, target_mb * 2**20 - held)
            self._held.append(bytearray(b"\xa5") * step)   # written pages: resident memory
            held += step
            stop.wait(interval)

    def added_latency(self) -> float:
        kind, params = self.fault.get("fault"), self.fault.get("params") or {}
        if kind == "latency":
            return float(params.get("seconds", 0.5))
        if kind == "latency_creep":
            grown = float(params.get("ramp", 0.001)) * max(0.0, time.time() - float(self.fault.get("at", 0.0)))
            return min(float(params.get("max_seconds", 1.0)), grown)
        return 0.0

    def pause(self) -> None:
        """For a synchronous handler: re-read the fault file and wait the latency the fault adds, if any."""
        self.refresh()
        delay = self.added_latency()
        if delay > 0:
            time.sleep(delay)

    def stop(self) -> None:
        self._stop.set()
        for t in self._spinners:
            t.join(timeout=5)
        self._spinners = []
        self._held = []


def _fill(stop: threading.Event, directory: Path, rate_mb: float, megabytes: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    block = b"\x5a" * 2**20
    written, tick = 0.0, 0.25
    while not stop.is_set() and written < megabytes:
        n = min(rate_mb * tick, megabytes - written)
        with open(directory / f"ballast-{int(written)}.bin", "wb") as f:
            whole = int(n)
            for _ in range(whole):
                f.write(block)
            f.write(block[: int((n - whole) * 2**20)])
            f.flush()
            os.fsync(f.fileno())
        written += n
        stop.wait(tick)


def _spin(stop: threading.Event, until: float) -> None:
    n = 0
    while not stop.is_set() and time.monotonic() < until:
        for _ in range(20_000):   # pure Python: holds the GIL between the interpreter's switch intervals
            n += 1
