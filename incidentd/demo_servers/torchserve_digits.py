"""TorchServe handler serving the demo's digits MLP, with the fault hook (demo and test code only).

Archived with ``weights.npz``, ``fault_hook.py`` and ``hook.json`` (``{"fault_file": PATH}``) as extra files;
TorchServe runs it in its worker processes. Requests are KServe-v1-style JSON on ``/predictions/digits``:
``{"instances": [[64 values], ...]}`` (``null`` for a missing value, imputed); the answer is
``{"predictions": [[10 logits], ...], "model_version": V}``. A fault lives in the worker it was injected
into, so scaling the workers to 0 and back (incidentd's TorchServe restart) ends it. incidentd's watching
and acting code never imports this module; it only sees TorchServe's own APIs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fault_hook import DigitsMLP, FaultState


class DigitsHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties.get("model_dir"))
        self.mlp = DigitsMLP(model_dir / "weights.npz")
        hook = json.loads((model_dir / "hook.json").read_text())
        self.faults = FaultState(hook.get("fault_file"), time.time())
        self.version = str((context.manifest or {}).get("model", {}).get("modelVersion", ""))
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        self.faults.pause()
        out = []
        for row in data:
            body = row.get("body") or row.get("data")
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            instances = body["instances"] if isinstance(body, dict) else []
            rows = [[float("nan") if v is None else v for v in r] for r in instances]
            out.append({"predictions": self.mlp.logits(rows).tolist(), "model_version": self.version})
        return out


_service = DigitsHandler()


def handle(data: Any, context: Any) -> Any:
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
