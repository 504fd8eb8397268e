"""What operators and the sidecar poll: ``/metrics`` and ``/healthz``."""
from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from incidentd.model_server.deps import HolderDep, MetricsDep

router = APIRouter()


@router.get("/metrics")
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz(holder: HolderDep) -> dict[str, Any]:
    return {"status": "ok", "version": holder.version, "pid": os.getpid()}
