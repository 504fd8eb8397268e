"""Predictions and their log, and the running version's reference set."""
from __future__ import annotations

import logging
import math
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from collector.instrumentation import (
    ARROW_STREAM,
    ErrorReason,
    ModelInstrumentation,
    PredictionRecord,
    prediction_page_arrow,
)
from incidentd.model_server.deps import FaultsDep, HolderDep, InstrumentationDep, RegistryDep
from incidentd.model_server.faults import FaultState
from incidentd.model_server.holder import ModelHolder
from incidentd.model_server.schemas import PredictRequest, unprocessable

log = logging.getLogger(__name__)
router = APIRouter()


def _infer(holder: ModelHolder, x: np.ndarray) -> tuple[np.ndarray, str]:
    import torch

    with holder.lock:
        model, version = holder.model, holder.version
    assert model is not None
    with torch.no_grad():
        return model(torch.as_tensor(x, device=holder.device)).float().cpu().numpy(), version


@router.post("/predict")
async def predict(body: PredictRequest, holder: HolderDep, inst: InstrumentationDep,
                  faults: FaultsDep) -> dict[str, Any]:
    with inst.in_flight():
        return await _answer(body, holder, inst, faults)


async def _answer(body: PredictRequest, holder: ModelHolder, inst: ModelInstrumentation,
                  faults: FaultState) -> dict[str, Any]:
    started = time.perf_counter()
    width = holder.n_features()
    for i, row in enumerate(body.inputs):
        if len(row) != width:
            inst.record_error(ErrorReason.INVALID_INPUT, version=holder.version)
            raise unprocessable(["body", "inputs", i], f"row {i} has {len(row)} values, expected {width}")
    x = np.array([[np.nan if v is None else v for v in row] for row in body.inputs], dtype=np.float32)
    x = faults.apply_input_faults(x)
    x = faults.apply_null_features(x)
    await faults.before_inference()
    try:
        logits, version = await run_in_threadpool(_infer, holder, x)
    except (RuntimeError, ValueError) as e:
        log.exception("inference failed")
        inst.record_error(ErrorReason.INTERNAL, time.perf_counter() - started, version=holder.version)
        raise HTTPException(status_code=500, detail="inference failed") from e
    latency = time.perf_counter() - started
    finite = np.isfinite(logits).all(axis=1)
    preds = [int(p) if ok else None for p, ok in zip(logits.argmax(axis=1), finite, strict=True)]
    now = time.time()
    ids = [inst.new_request_id() for _ in preds]
    records = [PredictionRecord(rid, now, version, [None if math.isnan(v) else float(v) for v in row],
                                p, bool(ok), latency, None if ok else ErrorReason.NONFINITE_OUTPUT.value)
               for rid, row, p, ok in zip(ids, x.tolist(), preds, finite, strict=True)]
    inst.record_request(latency, records, version=version)
    return {"request_ids": ids, "predictions": preds, "version": version}


@router.get("/predictions", response_model=None)
def predictions(inst: InstrumentationDep, after: Annotated[int, Query(ge=0)] = 0,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                format: Annotated[Literal["json", "arrow"], Query()] = "json") -> dict[str, Any] | Response:
    page = inst.predictions(after, limit)
    if format == "arrow":   # the sidecar's compact columnar page: a fraction of the JSON's cost to the server
        return Response(prediction_page_arrow(page), media_type=ARROW_STREAM)
    return {"cursor": page.cursor, "records": [r.as_dict() for r in page.records]}


@router.get("/reference")
def reference(holder: HolderDep, registry: RegistryDep) -> dict[str, Any]:
    version = holder.version
    ref = registry.reference(version)
    return {"version": version, "feature_names": holder.metadata.get("feature_names", []),
            "inputs": ref.inputs.tolist(), "predictions": ref.predictions.tolist()}
