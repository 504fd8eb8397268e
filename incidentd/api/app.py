"""create_app(settings): the FastAPI application. Nothing is built at import time."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors.errors import IncidentdError, InvalidInput
from incidentd.api.routes import incidents, models, webhooks
from incidentd.config import Settings
from incidentd.errors import ConfigError, Conflict, NotFound, StorageError
from incidentd.runtime import Runtime

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"   # what a 503 tells the sender (Alertmanager retries on 5xx on its own schedule)


def create_app(settings: Settings, runtime: Runtime | None = None, start: bool = True) -> FastAPI:
    rt = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start:
            rt.start()
        try:
            yield
        finally:
            if start:
                rt.stop()

    app = FastAPI(title="incidentd", version="0.1.0", lifespan=lifespan,
                  description="Incidents for ML models: evidence, ranked hypotheses, verified remediation.")
    app.state.runtime = rt
    app.include_router(incidents.router)
    app.include_router(webhooks.router)
    app.include_router(models.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok", "cycles": rt.loop.cycles,
                "source": "prometheus" if rt.settings.prometheus_url else "embedded"}

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # One place maps domain errors to status codes; a 500 never echoes internals.
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [f"{'.'.join(str(x) for x in e['loc'] if x != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(IncidentdError)
    async def _domain(request: Request, exc: IncidentdError) -> JSONResponse:
        status = {NotFound: 404, Conflict: 409, InvalidInput: 422, ConfigError: 422, StorageError: 503}
        code = next((c for t, c in status.items() if isinstance(exc, t)), 500)
        if code >= 500:
            rt.metrics.errors.labels("api").inc()
            # A storage fault is logged once, with its cause, by the store (issue 11); each request: debug.
            log.log(logging.DEBUG if isinstance(exc, StorageError) else logging.ERROR,
                    "request %s %s failed: %s", request.method, request.url.path, exc)
            return JSONResponse({"error": "storage unavailable, retry"}, status_code=code,
                                headers={"Retry-After": RETRY_AFTER_SECONDS} if code == 503 else None)
        return JSONResponse({"error": str(exc)}, status_code=code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rt.metrics.errors.labels("api").inc()
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    return app
