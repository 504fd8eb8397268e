"""GET /models and GET /models/{model}/signals: what incidentd sees right now, per model and signal."""
from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path

from diagnosis.signals import SignalState
from incidentd.api.deps import Reader, RuntimeDep
from incidentd.api.responses import READ, READ_ONE
from incidentd.errors import NotFound

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", responses=READ)
def list_models(runtime: RuntimeDep, who: Reader) -> dict[str, Any]:
    readings = runtime.loop.last_readings
    return {"models": [{"model": m, "active_signals": sorted(n for n, r in rs.items() if r.active),
                        "no_data_signals": sorted(n for n, r in rs.items() if r.state is SignalState.NO_DATA)}
                       for m, rs in sorted(readings.items())]}


@router.get("/{model}/signals", responses=READ_ONE)
def model_signals(model: Annotated[str, Path(min_length=1, max_length=200)], runtime: RuntimeDep,
                  who: Reader) -> dict[str, Any]:
    readings = runtime.loop.last_readings.get(model)
    if readings is None:
        # Never list the other models: a caller learns only about the name it asked for.
        raise NotFound(f"no model {model!r} seen yet")
    return {"model": model, "signals": {n: {**asdict(r), "state": r.state.value}
                                        for n, r in sorted(readings.items())}}
