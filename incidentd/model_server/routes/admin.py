"""The registry and the live weights: versions, load, known-good, clamp, weight statistics."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException

from incidentd.model_server.deps import HolderDep, InstrumentationDep, RegistryDep
from incidentd.model_server.schemas import ClampRequest, VersionRequest
from remediation.clamp import clamp_state, derive_bounds

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin")


@router.get("/versions")
def versions(holder: HolderDep, registry: RegistryDep) -> dict[str, Any]:
    return {"current": registry.current(), "known_good": registry.known_good(), "running": holder.version,
            "versions": [registry.metadata(v) for v in registry.versions()]}


@router.post("/load")
def load(body: VersionRequest, holder: HolderDep, inst: InstrumentationDep) -> dict[str, Any]:
    result = holder.install(body.version)
    inst.set_version(holder.version)
    log.warning("model load: %s", result["message"], extra={"version": body.version})
    return result


@router.post("/known-good")
def known_good(body: VersionRequest, registry: RegistryDep) -> dict[str, Any]:
    registry.verify(body.version)
    previous = registry.known_good()
    registry.mark_known_good(body.version)
    return {"known_good": body.version, "previous": previous, "changed": previous != body.version}


@router.post("/clamp")
def clamp(body: ClampRequest, holder: HolderDep, registry: RegistryDep) -> dict[str, Any]:
    good = registry.known_good()
    if good is None:
        raise HTTPException(status_code=409, detail="no known-good version to derive bounds from")
    good_state = registry.load(good)["state_dict"]
    bounds = derive_bounds(good_state, method=body.bounds, percentile=body.percentile, margin=body.margin)
    with holder.lock:
        assert holder.model is not None
        report = clamp_state(holder.model.state_dict(), good_state, bounds, dry_run=body.dry_run)
    log.warning("weight clamp (dry_run=%s): repaired %d non-finite, clamped %d", body.dry_run,
                report.total_repaired, report.total_clamped, extra={"version": holder.version})
    return {**report.as_dict(), "version": holder.version, "known_good": good}


@router.get("/weights")
def weights(holder: HolderDep) -> dict[str, Any]:
    import torch

    out = []
    with holder.lock, torch.no_grad():
        assert holder.model is not None
        for name, t in holder.model.state_dict().items():
            if not t.is_floating_point():
                continue
            x = t.detach().double()
            fin = x[torch.isfinite(x)]
            mn: float | None
            mx: float | None
            mean: float | None
            std: float | None
            if fin.numel():
                mn, mx, mean, std = (float(v) for v in (fin.min(), fin.max(), fin.mean(),
                                                         fin.std(unbiased=False)))
            else:
                mn = mx = mean = std = None
            out.append({"name": name, "shape": list(t.shape), "min": mn, "max": mx, "mean": mean,
                        "std": std, "nonfinite": int(x.numel() - fin.numel())})
    return {"version": holder.version, "tensors": out}
