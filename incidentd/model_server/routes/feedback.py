"""Delayed labels: ``POST /feedback`` joins them to predictions by request id; ``GET /feedback`` is the log."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from incidentd.model_server.deps import FaultsDep, HolderDep, InstrumentationDep
from incidentd.model_server.schemas import FeedbackRequest, unprocessable

router = APIRouter()


@router.post("/feedback")
def feedback(body: FeedbackRequest, holder: HolderDep, inst: InstrumentationDep,
             faults: FaultsDep) -> dict[str, Any]:
    pairs = body.pairs()
    n_classes = holder.n_classes()
    for i, item in enumerate(pairs):
        if item.label >= n_classes:
            loc: list[str | int] = ["body", "items", i, "label"] if body.items is not None else ["body", "label"]
            raise unprocessable(loc, f"label {item.label} out of range 0..{n_classes - 1}")
    unknown = [p.request_id for p in pairs if not inst.known_request(p.request_id)]
    if unknown:
        raise HTTPException(status_code=404, detail={"msg": "unknown request_id", "request_ids": unknown[:20]})
    items = [(p.request_id, p.label) for p in pairs]
    kept = faults.filter_feedback(items, n_classes)
    n = inst.record_feedback(kept) if kept else 0
    if len(kept) < len(items):       # a label_stall fault holds or drops what the client sent
        return {"accepted": n, "stalled": len(items) - len(kept)}
    return {"accepted": n}


@router.get("/feedback")
def feedback_log(inst: InstrumentationDep, after: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    page = inst.feedback(after, limit)
    return {"cursor": page.cursor, "records": [r.as_dict() for r in page.records]}
