"""Fault injection (``--enable-fault-injection`` only): the fault table in ``incidentd.model_server.faults``."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from incidentd.model_server.deps import (
    FaultInjectionEnabled,
    FaultsDep,
    HolderDep,
    InstrumentationDep,
    SettingsDep,
)
from incidentd.model_server.fault_params import FaultParamError, parse_fault_params
from incidentd.model_server.faults import apply_fault
from incidentd.model_server.schemas import FaultRequest, unprocessable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin/faults")


@router.get("")
async def active_faults(settings: SettingsDep, faults: FaultsDep) -> dict[str, Any]:
    return {"enabled": settings.enable_fault_injection, "active": faults.active()}


@router.post("", dependencies=[FaultInjectionEnabled])
def inject(body: FaultRequest, holder: HolderDep, faults: FaultsDep) -> dict[str, Any]:
    try:
        params = parse_fault_params(body.fault, body.params)
        done = apply_fault(body.fault, params, faults, holder)
    except FaultParamError as e:
        raise unprocessable(["body", "params", e.field], str(e)) from e
    log.warning("fault injected: %s %s", body.fault.value, done,
                extra={"fault": body.fault.value, "version": holder.version})
    return {"fault": body.fault.value, "applied": done, "version": holder.version}


@router.delete("", dependencies=[FaultInjectionEnabled])
async def clear_faults(faults: FaultsDep, inst: InstrumentationDep) -> dict[str, Any]:
    cleared, released = faults.clear()
    if released:
        # the stalled label pipeline delivers its backlog; ids that aged out of the log are skipped
        released = [(rid, y) for rid, y in released if inst.known_request(rid)]
        inst.record_feedback(released)
    log.warning("runtime faults cleared: %s (released %d held labels)", cleared, len(released))
    out: dict[str, Any] = {"cleared": cleared, "still_active": faults.active()}
    if released:
        out["released_labels"] = len(released)
    return out
