"""create_app(settings): the FastAPI application. Nothing is built at import time."""
from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from detectors.errors import IncidentdError, InvalidInput
from incidentd.api.deps import Public, identify
from incidentd.api.responses import errors
from incidentd.api.routes import incidents, keys, models, webhooks
from incidentd.auth.authenticator import Authenticator
from incidentd.auth.limits import BodyLimit
from incidentd.auth.ratelimit import RateLimiter
from incidentd.config import Settings
from incidentd.errors import ConfigError, Conflict, NotFound, StorageError
from incidentd.runtime import Runtime

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"   # what a 503 tells the sender (Alertmanager retries on 5xx on its own schedule)


def create_app(settings: Settings, runtime: Runtime | None = None, start: bool = True) -> FastAPI:
    rt = runtime or Runtime(settings)
    sec = rt.settings.security

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start:
            rt.start()
        try:
            yield
        finally:
            if start:
                rt.stop()

    # The schema and its viewers need a credential unless security.docs_public: without one, only /healthz
    # (and /metrics when configured) answers.
    public_docs = sec.docs_public
    app = FastAPI(title="incidentd", version="0.1.0", lifespan=lifespan,
                  openapi_url="/openapi.json" if public_docs else None,
                  docs_url="/docs" if public_docs else None, redoc_url="/redoc" if public_docs else None,
                  description="Incidents for ML models: evidence, ranked hypotheses, verified remediation. "
                              "Every route but /healthz (and /metrics when security.metrics_public) needs "
                              "'Authorization: Bearer <key>' with the scope named in its description; "
                              "see docs/security.md.")
    app.state.runtime = rt
    app.state.authenticator = Authenticator(rt.settings, rt.store)
    app.state.rate_limiter = RateLimiter(rate=sec.rate_limit_per_second, burst=sec.rate_limit_burst)
    app.state.webhook_limiter = RateLimiter(rate=sec.webhook_rate_per_second, burst=sec.webhook_burst)
    app.state.webhook_slots = threading.BoundedSemaphore(sec.webhook_max_in_flight)
    app.add_middleware(BodyLimit, max_bytes=sec.max_body_bytes)
    app.include_router(incidents.router)
    app.include_router(webhooks.router)
    app.include_router(models.router)
    app.include_router(keys.router)

    @app.get("/healthz", tags=["health"], dependencies=[Depends(Public())])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "cycles": rt.loop.cycles,
                "source": "prometheus" if rt.settings.prometheus_url else "embedded"}

    def authenticated(request: Request) -> None:
        if not identify(request).authenticated:
            raise HTTPException(401, "a credential is required: 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    def metrics_access(request: Request) -> None:
        if not sec.metrics_public:
            authenticated(request)

    @app.get("/metrics", tags=["health"], response_class=Response,
             dependencies=[Depends(Public()), Depends(metrics_access)],
             responses={200: {"description": "Prometheus text exposition format 0.0.4.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **errors(401)})
    def metrics() -> Response:
        """The service's own metrics; any authenticated identity (or anyone, with security.metrics_public)."""
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if not public_docs:
        @app.get("/openapi.json", include_in_schema=False,
                 dependencies=[Depends(Public()), Depends(authenticated)])
        def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

    # One place maps errors to status codes and one body shape; a 500 never echoes internals.
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
        fields = [f"{'.'.join(str(x) for x in e['loc'] if x != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "fields": fields[:20]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400:
            detail = "the body is not valid JSON (UTF-8)"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

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
