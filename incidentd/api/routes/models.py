"""GET /models and GET /models/{model}/signals: what incidentd sees right now, per model and signal."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from diagnosis.signals import SignalState
from incidentd.api.deps import RuntimeDep
from incidentd.errors import NotFound

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    readings = runtime.loop.last_readings
    return {"models": [{"model": m, "active_signals": sorted(n for n, r in rs.items() if r.active),
                        "no_data_signals": sorted(n for n, r in rs.items() if r.state is SignalState.NO_DATA)}
                       for m, rs in sorted(readings.items())]}


@router.get("/{model}/signals")
def model_signals(model: str, runtime: RuntimeDep) -> dict[str, Any]:
    readings = runtime.loop.last_readings.get(model)
    if readings is None:
        raise NotFound(f"no model {model!r} seen yet; known: {sorted(runtime.loop.last_readings)}")
    return {"model": model, "signals": {n: {**asdict(r), "state": r.state.value}
                                        for n, r in sorted(readings.items())}}
