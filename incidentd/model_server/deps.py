"""Typed dependencies for the model server's routes, taken from the app state (set by ``create_app``).

They are ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, and a thread hop per
dependency per request is what a GIL-starved server (the cpu_contention fault) cannot afford.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from prometheus_client import CollectorRegistry

from collector.instrumentation import ModelInstrumentation
from incidentd.model_server.faults import FaultState
from incidentd.model_server.holder import ModelHolder
from incidentd.model_server.settings import ModelServerSettings
from remediation.registry import ModelRegistry


async def get_settings(request: Request) -> ModelServerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder  # type: ignore[no-any-return]


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.holder.registry  # type: ignore[no-any-return]


async def get_instrumentation(request: Request) -> ModelInstrumentation:
    return request.app.state.instrumentation  # type: ignore[no-any-return]


async def get_faults(request: Request) -> FaultState:
    return request.app.state.faults  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> CollectorRegistry:
    return request.app.state.metrics  # type: ignore[no-any-return]


async def check_fault_injection(request: Request) -> None:
    if not request.app.state.settings.enable_fault_injection:
        raise HTTPException(status_code=403,
                            detail="fault injection is disabled; start with --enable-fault-injection")


SettingsDep = Annotated[ModelServerSettings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
InstrumentationDep = Annotated[ModelInstrumentation, Depends(get_instrumentation)]
FaultsDep = Annotated[FaultState, Depends(get_faults)]
MetricsDep = Annotated[CollectorRegistry, Depends(get_metrics)]
FaultInjectionEnabled = Depends(check_fault_injection)
