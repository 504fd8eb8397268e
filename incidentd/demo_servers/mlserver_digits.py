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
- ``latency`` (``seconds``): every inference waits this long (a slow dependency).

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
        if fault.get("fault") == "starvation":
            params = fault.get("params") or {}
            self._stop = threading.Event()
            until = time.monotonic() + float(params.get("seconds", 300))
            for i in range(int(params.get("threads", 3))):
                t = threading.Thread(target=_spin, args=(self._stop, until), name=f"starve-{i}", daemon=True)
                t.start()
                self._spinners.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._spinners:
            t.join(timeout=5)
        self._spinners = []


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
        fault = self._faults.refresh()
        if fault.get("fault") == "latency":
            await asyncio.sleep(float((fault.get("params") or {}).get("seconds", 0.5)))
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
