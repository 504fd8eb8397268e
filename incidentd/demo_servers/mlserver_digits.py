"""MLServer custom runtime serving the demo's digits MLP, with the fault hook (demo and test code only).

MLServer loads this file from the model's folder (``implementation: mlserver_digits.DigitsModel``) in its
own virtual environment; ``fault_hook.py`` (the MLP in numpy and the fault file, see there) sits beside it.
``parameters.extra.fault_file`` names the fault file. incidentd's watching and acting code never imports
this module; it only sees MLServer's own API.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from fault_hook import DigitsMLP, FaultState
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class DigitsModel(MLModel):
    async def load(self) -> bool:
        uri = Path(self.settings.parameters.uri or ".")
        folder = uri if uri.is_dir() else uri.parent
        self._mlp = DigitsMLP(folder / "weights.npz")
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
        x = self._mlp.logits(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("logits", x.astype(np.float32))],
        )
