"""The sidecar's HTTP face: /metrics (Prometheus text) and /healthz, as a small FastAPI app.

>>> sidecar = Sidecar("http://127.0.0.1:8081", interval=1.0, gpu_source=None, registry=CollectorRegistry())
>>> app = create_app(sidecar)               # starts/stops the sidecar loop with the app's lifespan
>>> uvicorn.run(app, host="127.0.0.1", port=9101)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.sidecar import Sidecar


def create_app(sidecar: Sidecar, manage_loop: bool = True) -> FastAPI:
    """Build the app; with ``manage_loop`` the sidecar thread runs for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_loop:
            sidecar.start()
        try:
            yield
        finally:
            if manage_loop:
                sidecar.close()

    app = FastAPI(title="incidentd sidecar", lifespan=lifespan)
    app.state.sidecar = sidecar

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(sidecar.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        snap = sidecar.snapshot()
        return {
            "status": "ok",
            "target": sidecar.target_url,
            "model_up": None if snap is None else snap.up,
            "model": None if snap is None else snap.model,
            "version": None if snap is None else snap.version,
            "last_cycle": None if snap is None else snap.at,
            "scrapes_total": 0 if snap is None else snap.scrapes_total,
            "scrape_errors_total": 0 if snap is None else snap.scrape_errors_total,
        }

    return app
