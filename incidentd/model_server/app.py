"""The demo model server's FastAPI app: ``create_app(settings)`` builds everything, nothing at import time.

    >>> app = create_app(ModelServerSettings(registry_dir=Path("registry")))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8081)
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from starlette.concurrency import run_in_threadpool

from collector.instrumentation import ErrorReason, ModelInstrumentation, PredictionRecord, WeightStats
from incidentd.model_server import faults as faultlib
from incidentd.model_server.faults import FaultKind, FaultParamError, FaultState
from incidentd.model_server.model import model_from_checkpoint, select_device, train_version
from remediation.clamp import clamp_state, derive_bounds
from remediation.registry import CorruptCheckpoint, ModelRegistry, UnknownVersion

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MAX_ROWS = 256


@dataclass(frozen=True, slots=True)
class ModelServerSettings:
    """Validated at start-up and passed in; ``registry_dir`` is resolved to an absolute path."""

    registry_dir: Path
    model_name: str = "digits"
    enable_fault_injection: bool = False
    device: str = "auto"
    initial_version: str = "v1"
    prediction_log_size: int = 20_000
    feedback_log_size: int = 20_000
    train_epochs: int = 25
    torch_threads: int = 1          # inference on a tiny MLP: one thread is fastest and kindest

    def __post_init__(self) -> None:
        object.__setattr__(self, "registry_dir", Path(self.registry_dir).expanduser().resolve())
        if self.prediction_log_size < 1 or self.feedback_log_size < 1:
            raise ValueError("log sizes must be >= 1")


# --- request bodies ---------------------------------------------------------------------------------
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Annotated[list[list[FiniteFloat | None]], Field(min_length=1, max_length=MAX_ROWS)]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    label: Annotated[StrictInt, Field(ge=0)]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    label: Annotated[StrictInt, Field(ge=0)] | None = None
    items: Annotated[list[FeedbackItem], Field(min_length=1, max_length=10_000)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        single = self.request_id is not None or self.label is not None
        if single and self.items is not None:
            raise ValueError("give either request_id and label, or items, not both")
        if not single and self.items is None:
            raise ValueError("give request_id and label, or items")
        if single and (self.request_id is None or self.label is None):
            raise ValueError("request_id and label are both required")
        return self

    def pairs(self) -> list[FeedbackItem]:
        if self.items is not None:
            return self.items
        assert self.request_id is not None and self.label is not None
        return [FeedbackItem(request_id=self.request_id, label=self.label)]


class VersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[str, Field(min_length=1, max_length=64)]


class ClampRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    bounds: Literal["minmax", "percentile"] = "minmax"
    percentile: Annotated[float, Field(gt=50.0, le=100.0)] = 99.9
    margin: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fault: FaultKind
    params: dict[str, Any] = Field(default_factory=dict)


def _unprocessable(loc: list[str | int], msg: str, typ: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": loc, "msg": msg, "type": typ}])


# --- the served model --------------------------------------------------------------------------------
class ModelHolder:
    """The live model and its version; ``lock`` guards swaps and in-place weight edits."""

    def __init__(self, registry: ModelRegistry, device: torch.device) -> None:
        self.registry = registry
        self.device = device
        self.lock = threading.RLock()
        self.model: torch.nn.Module | None = None
        self.version: str = ""
        self.metadata: dict[str, Any] = {}

    def n_features(self) -> int:
        return int(self.metadata.get("arch", {}).get("input_dim", 64))

    def n_classes(self) -> int:
        return int(self.metadata.get("arch", {}).get("classes", 10))

    def install(self, version: str) -> dict[str, Any]:
        """Verify + build ``version`` off-lock, then swap the live model and the registry pointer."""
        ckpt = self.registry.load(version)           # raises UnknownVersion / CorruptCheckpoint
        meta = self.registry.metadata(version)
        model = model_from_checkpoint(ckpt, self.device)
        with self.lock:
            previous = self.version
            same = previous == version and self.model is not None and _same_weights(self.model, model)
            if same:
                return {"previous": previous, "current": version, "changed": False,
                        "message": f"{version} is already loaded with identical weights; nothing to do"}
            self.model, self.version, self.metadata = model, version, meta
            switch = self.registry.switch(version)
        msg = (f"reloaded {version} from its verified checkpoint (live weights differed)"
               if previous == version else switch.message)
        return {"previous": previous or None, "current": version, "changed": True, "message": msg}

    def weight_stats(self) -> WeightStats | None:
        import torch

        model = self.model
        if model is None:
            return None
        nonfinite, abs_max = 0, 0.0
        with torch.no_grad():
            for p in model.parameters():
                fin = torch.isfinite(p)
                nonfinite += int((~fin).sum())
                if fin.any():
                    abs_max = max(abs_max, float(p[fin].abs().max()))
        return WeightStats(nonfinite, abs_max)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def _bootstrap(settings: ModelServerSettings, holder: ModelHolder) -> None:
    """Train v1 into an empty registry; then serve ``current``, falling back to known-good if corrupt."""
    reg = holder.registry
    if not reg.versions():
        log.info("empty registry %s: training %s", reg.root, settings.initial_version)
        train_version(reg, settings.initial_version, epochs=settings.train_epochs, mark_known_good=True,
                      make_current=True, notes="trained at first start")
    candidates = [v for v in (reg.current(), reg.known_good(), *reversed(reg.versions())) if v]
    for v in dict.fromkeys(candidates):
        try:
            holder.install(v)
        except (CorruptCheckpoint, UnknownVersion) as e:
            log.error("cannot serve version %s at start-up: %s", v, e)
            continue
        if reg.known_good() is None:
            reg.mark_known_good(v)
        return
    raise CorruptCheckpoint(reg.root, "no loadable model version in the registry")


def create_app(settings: ModelServerSettings) -> FastAPI:
    """Build the model server: registry, model (trained on first start), metrics, routes."""
    import torch
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    registry = ModelRegistry(settings.registry_dir)
    holder = ModelHolder(registry, select_device(settings.device))
    _bootstrap(settings, holder)

    metrics = CollectorRegistry()
    ProcessCollector(registry=metrics)
    inst = ModelInstrumentation(metrics, settings.model_name, holder.version, weight_stats=holder.weight_stats,
                                prediction_log_size=settings.prediction_log_size,
                                feedback_log_size=settings.feedback_log_size)
    fault_state = FaultState()
    pid = os.getpid()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        fault_state.clear()   # held labels are dropped at shutdown: the process is going away
        fault_state.stop_starvation()

    app = FastAPI(title="incidentd demo model server", lifespan=lifespan)
    app.state.settings = settings
    app.state.holder = holder
    app.state.instrumentation = inst
    app.state.faults = fault_state

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path == "/predict":
            inst.record_error(ErrorReason.INVALID_INPUT, version=holder.version)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(UnknownVersion)
    async def _unknown(request: Request, exc: UnknownVersion) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc), "version": exc.version,
                                                      "known": exc.known})

    @app.exception_handler(CorruptCheckpoint)
    async def _corrupt(request: Request, exc: CorruptCheckpoint) -> JSONResponse:
        log.error("refused corrupt checkpoint: %s", exc)
        return JSONResponse(status_code=422, content={"detail": str(exc), "path": exc.path,
                                                      "running_version": holder.version})

    # --- serving -------------------------------------------------------------------------------------
    def infer(x: np.ndarray) -> tuple[np.ndarray, str]:
        import torch

        with holder.lock:
            model, version = holder.model, holder.version
        assert model is not None
        with torch.no_grad():
            return model(torch.as_tensor(x, device=holder.device)).float().cpu().numpy(), version

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        with inst.in_flight():
            return await answer(body)

    async def answer(body: PredictRequest) -> dict[str, Any]:
        started = time.perf_counter()
        width = holder.n_features()
        for i, row in enumerate(body.inputs):
            if len(row) != width:
                inst.record_error(ErrorReason.INVALID_INPUT, version=holder.version)
                raise _unprocessable(["body", "inputs", i], f"row {i} has {len(row)} values, expected {width}")
        x = np.array([[np.nan if v is None else v for v in row] for row in body.inputs], dtype=np.float32)
        x = fault_state.apply_input_faults(x)
        x = fault_state.apply_null_features(x)
        await fault_state.before_inference()
        try:
            logits, version = await run_in_threadpool(infer, x)
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

    @app.post("/feedback")
    def feedback(body: FeedbackRequest) -> dict[str, Any]:
        pairs = body.pairs()
        n_classes = holder.n_classes()
        for i, item in enumerate(pairs):
            if item.label >= n_classes:
                loc = ["body", "items", i, "label"] if body.items is not None else ["body", "label"]
                raise _unprocessable(loc, f"label {item.label} out of range 0..{n_classes - 1}")
        unknown = [p.request_id for p in pairs if not inst.known_request(p.request_id)]
        if unknown:
            raise HTTPException(status_code=404, detail={"msg": "unknown request_id", "request_ids": unknown[:20]})
        items = [(p.request_id, p.label) for p in pairs]
        kept = fault_state.filter_feedback(items, n_classes)
        n = inst.record_feedback(kept) if kept else 0
        if len(kept) < len(items):       # a label_stall fault holds or drops what the client sent
            return {"accepted": n, "stalled": len(items) - len(kept)}
        return {"accepted": n}

    @app.get("/predictions")
    def predictions(after: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        page = inst.predictions(after, limit)
        return {"cursor": page.cursor, "records": [r.as_dict() for r in page.records]}

    @app.get("/feedback")
    def feedback_log(after: Annotated[int, Query(ge=0)] = 0,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        page = inst.feedback(after, limit)
        return {"cursor": page.cursor, "records": [r.as_dict() for r in page.records]}

    @app.get("/reference")
    def reference() -> dict[str, Any]:
        version = holder.version
        ref = registry.reference(version)
        return {"version": version, "feature_names": holder.metadata.get("feature_names", []),
                "inputs": ref.inputs.tolist(), "predictions": ref.predictions.tolist()}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": holder.version, "pid": pid}

    # --- admin ---------------------------------------------------------------------------------------
    @app.get("/admin/versions")
    def versions() -> dict[str, Any]:
        return {"current": registry.current(), "known_good": registry.known_good(), "running": holder.version,
                "versions": [registry.metadata(v) for v in registry.versions()]}

    @app.post("/admin/load")
    def load(body: VersionRequest) -> dict[str, Any]:
        result = holder.install(body.version)
        inst.set_version(holder.version)
        log.warning("model load: %s", result["message"], extra={"version": body.version})
        return result

    @app.post("/admin/known-good")
    def known_good(body: VersionRequest) -> dict[str, Any]:
        registry.verify(body.version)
        previous = registry.known_good()
        registry.mark_known_good(body.version)
        return {"known_good": body.version, "previous": previous, "changed": previous != body.version}

    @app.post("/admin/clamp")
    def clamp(body: ClampRequest) -> dict[str, Any]:
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

    @app.get("/admin/weights")
    def weights() -> dict[str, Any]:
        import torch

        out = []
        with holder.lock, torch.no_grad():
            assert holder.model is not None
            for name, t in holder.model.state_dict().items():
                if not t.is_floating_point():
                    continue
                x = t.detach().double()
                fin = x[torch.isfinite(x)]
                if fin.numel():
                    mn, mx, mean, std = (float(v) for v in (fin.min(), fin.max(), fin.mean(),
                                                             fin.std(unbiased=False)))
                else:
                    mn = mx = mean = std = None
                out.append({"name": name, "shape": list(t.shape), "min": mn, "max": mx, "mean": mean,
                            "std": std,
                            "nonfinite": int(x.numel() - fin.numel())})
        return {"version": holder.version, "tensors": out}

    @app.get("/admin/faults")
    async def active_faults() -> dict[str, Any]:
        return {"enabled": settings.enable_fault_injection, "active": fault_state.active()}

    @app.post("/admin/faults")
    def inject(body: FaultRequest) -> dict[str, Any]:
        if not settings.enable_fault_injection:
            raise HTTPException(status_code=403,
                                detail="fault injection is disabled; start with --enable-fault-injection")
        p = body.params
        try:
            if body.fault in (FaultKind.NONFINITE_WEIGHTS, FaultKind.EXPLODING_WEIGHTS):
                with holder.lock:
                    assert holder.model is not None
                    done = faultlib.inject_weights(holder.model, body.fault, p, fault_state.rng)
            elif body.fault is FaultKind.STARVATION:
                done = faultlib.start_starvation(fault_state, p)
            elif body.fault is FaultKind.HANG:
                done = faultlib.start_hang(fault_state, p)
            elif body.fault is FaultKind.CRASH:
                done = faultlib.schedule_crash(p)
            elif body.fault is FaultKind.LATENCY:
                fault_state.latency_seconds = faultlib._num(p, "seconds", 0.5, 0.0, 600.0)
                done = {"seconds": fault_state.latency_seconds}
            elif body.fault is FaultKind.NULL_FEATURES:
                fault_state.null_fraction = faultlib._num(p, "fraction", 0.3, 0.0, 1.0)
                done = {"fraction": fault_state.null_fraction}
            elif body.fault is FaultKind.INPUT_DRIFT:
                done = faultlib.start_input_drift(fault_state, p, holder.n_features())
            elif body.fault is FaultKind.UNIT_CHANGE:
                done = faultlib.start_unit_change(fault_state, p, holder.n_features())
            elif body.fault is FaultKind.UNSEEN_CATEGORIES:
                done = faultlib.start_unseen_categories(fault_state, p, holder.n_features())
            elif body.fault is FaultKind.LABEL_STALL:
                done = faultlib.start_label_stall(fault_state, p)
            elif body.fault is FaultKind.CONCEPT_DRIFT:
                done = faultlib.start_concept_drift(fault_state, p, holder.n_classes())
            # --- slow faults (issue 18) ---
            elif body.fault is FaultKind.MEMORY_LEAK:
                done = faultlib.start_memory_leak(fault_state, p)
            elif body.fault is FaultKind.LATENCY_CREEP:
                done = faultlib.start_latency_creep(fault_state, p)
            elif body.fault is FaultKind.DISK_FILL:
                # where this server writes: next to its registry (a scratch directory removed on clear)
                done = faultlib.start_disk_fill(fault_state, p, settings.registry_dir / ".fault-disk-fill")
            else:
                done = faultlib.start_memory_balloon(fault_state, p)
        except FaultParamError as e:
            raise _unprocessable(["body", "params", e.field], str(e)) from e
        log.warning("fault injected: %s %s", body.fault.value, done,
                    extra={"fault": body.fault.value, "version": holder.version})
        return {"fault": body.fault.value, "applied": done, "version": holder.version}

    @app.delete("/admin/faults")
    async def clear_faults() -> dict[str, Any]:
        if not settings.enable_fault_injection:
            raise HTTPException(status_code=403,
                                detail="fault injection is disabled; start with --enable-fault-injection")
        cleared, released = fault_state.clear()
        if released:
            # the stalled label pipeline delivers its backlog; ids that aged out of the log are skipped
            released = [(rid, y) for rid, y in released if inst.known_request(rid)]
            inst.record_feedback(released)
        log.warning("runtime faults cleared: %s (released %d held labels)", cleared, len(released))
        out: dict[str, Any] = {"cleared": cleared, "still_active": fault_state.active()}
        if released:
            out["released_labels"] = len(released)
        return out

    return app
