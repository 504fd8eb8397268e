"""MLServer custom runtime serving the demo's digits MLP, with a fault hook (demo and test code only).

MLServer loads this file from the model's folder (``implementation: mlserver_digits.DigitsModel``) in its
own virtual environment, so it needs nothing but MLServer, numpy and the standard library. The weights are
the registry checkpoint's tensors exported to ``weights.npz`` (incidentd.demo_servers.mlserver writes
them); the forward pass is the same MLP as incidentd.model_server.model: NaN inputs imputed by the
training mean, ``x / input_scale``, Linear-ReLU layers, logits out.

The hook: ``parameters.extra.fault_file`` names a JSON file ``{"fault": KIND, "params": {...}, "at": T}``
that the demo writes to inject a fault and removes to clear it. A fault counts only for a model instance
loaded before ``T``: it lives in the instance, as the demo server's faults live in its process, so the
unload/load that incidentd's MLServer executor calls a restart ends it. Kinds:

- ``starvation`` (``threads``, ``seconds``): threads spinning in Python hold the GIL, so the server's one
  event loop (``parallel_workers: 0``) answers late and the process burns CPU;
- ``latency`` (``seconds``): every inference waits this long (a slow dependency);
- ``latency_creep`` (``ramp``, ``max_seconds``): every inference waits ``ramp`` seconds longer per second
  since the injection, up to ``max_seconds``;
- ``memory_balloon`` (``megabytes``, ``step_megabytes``, ``interval_seconds``) and ``memory_leak``
  (``rate`` MB/s up to ``limit_megabytes``): the instance holds written pages, freed when it is unloaded;
- ``disk_fill`` (``rate`` MB/s up to ``megabytes``): ballast written and fsynced next to the fault file
  (in ``ballast/``); the demo deletes it when it clears the fault.

incidentd's watching and acting code never imports this module; it only sees MLServer's own API.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


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


class DigitsModel(MLModel):
    async def load(self) -> bool:
        uri = Path(self.settings.parameters.uri or ".")
        folder = uri if uri.is_dir() else uri.parent
        w = np.load(folder / "weights.npz")
        self._layers = [(w[f"w{i}"], w[f"b{i}"]) for i in range(int(w["layers"]))]
        self._fill = w["fill"]
        self._scale = float(w["input_scale"])
        extra = self.settings.parameters.extra or {}
        self._faults = FaultState(extra.get("fault_file"), time.time())
        return True

    async def unload(self) -> bool:
        self._faults.stop()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self._faults.refresh()
        delay = self._faults.added_latency()
        if delay > 0:
            await asyncio.sleep(delay)
        x = np.asarray(NumpyCodec.decode_input(payload.inputs[0]), dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        x = np.where(np.isnan(x), self._fill, x) / self._scale
        for i, (w, b) in enumerate(self._layers):
            x = x @ w.T + b
            if i < len(self._layers) - 1:
                x = np.maximum(x, 0.0)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("logits", x.astype(np.float32))],
        )
