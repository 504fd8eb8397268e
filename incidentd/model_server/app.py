"""The demo model server's FastAPI app: ``create_app(settings)`` builds everything, nothing at import time.

Routes live per resource in ``incidentd/model_server/routes/`` and take what they need through the typed
dependencies of ``incidentd/model_server/deps.py``; this module wires them.

    >>> app = create_app(ModelServerSettings(registry_dir=Path("registry")))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8081)
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from collector.instrumentation import ErrorReason, ModelInstrumentation
from incidentd.model_server.auth import AdminToken
from incidentd.model_server.faults import FaultState
from incidentd.model_server.holder import ModelHolder, bootstrap
from incidentd.model_server.model import select_device
from incidentd.model_server.routes import admin, faults, feedback, ops, serving
from incidentd.model_server.schemas import MAX_ROWS
from incidentd.model_server.settings import ModelServerSettings
from remediation.registry import CorruptCheckpoint, ModelRegistry, UnknownVersion

__all__ = ["MAX_ROWS", "ModelHolder", "ModelServerSettings", "Path", "create_app"]

log = logging.getLogger(__name__)


def _handle_errors(app: FastAPI, holder: ModelHolder, inst: ModelInstrumentation) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path == "/predict":
            inst.record_error(ErrorReason.INVALID_INPUT, version=holder.version)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(UnknownVersion)
    async def _unknown(request: Request, exc: UnknownVersion) -> JSONResponse:
        # Never list the other versions to the caller (GET /admin/versions does, behind the token).
        return JSONResponse(status_code=404, content={"detail": f"unknown version {exc.version!r}",
                                                      "version": exc.version})

    @app.exception_handler(CorruptCheckpoint)
    async def _corrupt(request: Request, exc: CorruptCheckpoint) -> JSONResponse:
        log.error("refused corrupt checkpoint: %s", exc)
        # The log has the path; the caller is told which version, never where it lives on disk.
        return JSONResponse(status_code=422, content={"detail": f"checkpoint file {Path(exc.path).name} failed "
                                                                f"its integrity check; {holder.version!r} keeps "
                                                                "running",
                                                      "running_version": holder.version})


def create_app(settings: ModelServerSettings) -> FastAPI:
    """Build the model server: registry, model (trained on first start), metrics, routes."""
    import torch
    from prometheus_client import CollectorRegistry, ProcessCollector

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    registry = ModelRegistry(settings.registry_dir)
    holder = ModelHolder(registry, select_device(settings.device))
    bootstrap(settings, holder)

    metrics = CollectorRegistry()
    ProcessCollector(registry=metrics)
    inst = ModelInstrumentation(metrics, settings.model_name, holder.version, weight_stats=holder.weight_stats,
                                prediction_log_size=settings.prediction_log_size,
                                feedback_log_size=settings.feedback_log_size)
    fault_state = FaultState()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        fault_state.clear()   # held labels are dropped at shutdown: the process is going away
        fault_state.stop_starvation()

    app = FastAPI(title="incidentd demo model server", lifespan=lifespan)
    app.state.settings = settings
    app.state.holder = holder
    app.state.instrumentation = inst
    app.state.faults = fault_state
    app.state.metrics = metrics
    _handle_errors(app, holder, inst)
    for module in (serving, feedback, ops):
        app.include_router(module.router)
    # Every /admin/* route, fault injection included, needs the admin token when one is configured.
    admin_token = [Depends(AdminToken(settings.admin_token))]
    for module in (admin, faults):
        app.include_router(module.router, dependencies=admin_token)
    return app
