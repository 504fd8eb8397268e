"""Triton Python-backend model serving the demo's digits MLP, with the fault hook (demo and test code only).

Triton loads this file as ``model.py`` of each version folder (``<repository>/digits/<version>/``), with
``weights.npz``, ``fault_hook.py`` and ``hook.json`` (``{"fault_file": PATH}``) beside it, and runs it in a
Python-backend stub process per model instance. Requests are Open Inference Protocol v2: input ``pixels``
(FP32, ``[-1, 64]``), output ``logits`` (FP32, ``[-1, 10]``). A fault lives in the instance it was injected
into, so Triton's unload and load of the model (incidentd's restart there) ends it. incidentd's watching and
acting code never imports this module; it only sees Triton's own APIs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

sys.path.insert(0, str(Path(__file__).resolve().parent))   # fault_hook.py sits beside this file

from fault_hook import DigitsMLP, FaultState  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.mlp = DigitsMLP(folder / "weights.npz")
        hook = json.loads((folder / "hook.json").read_text())
        self.faults = FaultState(hook.get("fault_file"), time.time())

    def execute(self, requests: list[Any]) -> list[Any]:
        self.faults.pause()
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "pixels").as_numpy()
            logits = self.mlp.logits(x).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", logits)]))
        return out

    def finalize(self) -> None:
        self.faults.stop()
