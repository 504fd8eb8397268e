"""The parameters of every server-side fault: one pydantic model per fault kind, read by both sides.

``incidentd inject`` validates ``--param KEY=VALUE`` strings with these models before it sends anything;
the model server validates the JSON body of ``POST /admin/faults`` with the same models. A bad
parameter raises :class:`FaultParamError` naming the field, and its message is the same on both sides.

    >>> parse_fault_params(FaultKind.LATENCY, {"seconds": "0.5"}).seconds
    0.5
    >>> parse_fault_params(FaultKind.NULL_FEATURES, {"fraction": 2})
    Traceback (most recent call last):
    ...
    incidentd.model_server.fault_params.FaultParamError: parameter 'fraction': Input should be less than or equal to 1

Checks that need the running model (a feature index below the model's width, a label shift below its
class count, a tensor name, free memory) stay with the server's fault handlers and raise the same error.
"""
from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

__all__ = ["DEFAULT_DRIFT_FEATURES", "PARAMS", "FaultKind", "FaultParamError", "FaultParams",
           "parse_fault_params"]


class FaultKind(enum.StrEnum):
    NONFINITE_WEIGHTS = "nonfinite_weights"
    EXPLODING_WEIGHTS = "exploding_weights"
    STARVATION = "starvation"
    HANG = "hang"
    CRASH = "crash"
    LATENCY = "latency"
    NULL_FEATURES = "null_features"
    INPUT_DRIFT = "input_drift"
    UNIT_CHANGE = "unit_change"
    UNSEEN_CATEGORIES = "unseen_categories"
    LABEL_STALL = "label_stall"
    CONCEPT_DRIFT = "concept_drift"
    MEMORY_BALLOON = "memory_balloon"
    # slow faults (issue 18)
    MEMORY_LEAK = "memory_leak"
    LATENCY_CREEP = "latency_creep"
    DISK_FILL = "disk_fill"


# Central pixels of the 8x8 digits: they vary most, so a shift there is what the drift tests see first.
DEFAULT_DRIFT_FEATURES: tuple[int, ...] = (19, 20, 27, 28, 35, 36, 43, 44)


class FaultParamError(ValueError):
    """A fault parameter is missing, malformed or out of range; ``field`` names it.

    ``str(error)`` is ``parameter 'FIELD': REASON`` wherever it is raised (CLI or server).
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"parameter {field!r}: {reason}")


def _not_bool(v: Any) -> Any:
    # JSON true/false and "yes" are not numbers here (pydantic's lax mode would read True as 1).
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    return v


def _index_list(v: Any) -> Any:
    """``19`` or ``"19,20"`` (the CLI's form) or ``[19, 20]``."""
    if isinstance(v, bool):
        raise ValueError("must be a list of feature indices")
    if isinstance(v, int):
        return [v]
    if isinstance(v, str):
        parts = [p.strip() for p in v.split(",") if p.strip()]
        return parts
    return v


def _flag(v: Any) -> Any:
    """``true``/``false`` (JSON) or the CLI's strings ``"true"``/``"false"``; nothing else (not 1, not "yes")."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ValueError("must be true or false")


def _num(default: float, ge: float, le: float, doc: str) -> Any:
    return Field(default, ge=ge, le=le, allow_inf_nan=False, description=doc)


Number = Annotated[float, BeforeValidator(_not_bool)]
Integer = Annotated[int, BeforeValidator(_not_bool)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Indices = Annotated[list[Integer], BeforeValidator(_index_list), Field(min_length=1)]


class FaultParams(BaseModel):
    """Base of every fault's parameters: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NonfiniteWeightsParams(FaultParams):
    tensor: str | None = Field(None, min_length=1, description="parameter name (default: the first weight)")
    count: Integer = Field(10, ge=1, description="entries to damage")
    value: Literal["nan", "inf", "-inf"] = Field("nan", description="nan, inf or -inf")


class ExplodingWeightsParams(FaultParams):
    tensor: str | None = Field(None, min_length=1, description="parameter name (default: the first weight)")
    count: Integer | None = Field(None, ge=1, description="entries to scale (default 5% of the tensor)")
    scale: Number = _num(1000.0, -1e30, 1e30, "multiplier")


class StarvationParams(FaultParams):
    threads: Integer = Field(4, ge=1, le=64, description="burner threads")
    seconds: Number = _num(0.0, 0.0, 86_400.0, "duration (0: until the process exits)")


class HangParams(FaultParams):
    seconds: Number = _num(60.0, 0.0, 86_400.0, "how long /predict blocks")


class CrashParams(FaultParams):
    delay_seconds: Number = _num(0.2, 0.0, 60.0, "delay before exit")
    exit_code: Integer = Field(3, ge=0, le=255, description="exit status")


class LatencyParams(FaultParams):
    seconds: Number = _num(0.5, 0.0, 600.0, "added latency")


class NullFeaturesParams(FaultParams):
    fraction: Number = _num(0.3, 0.0, 1.0, "share of values nulled")


class InputDriftParams(FaultParams):
    fraction: Number = _num(0.5, 0.0, 1.0, "share of rows shifted")
    features: Indices = Field(default_factory=lambda: list(DEFAULT_DRIFT_FEATURES),
                              description="feature indices, comma-separated")
    scale: Number = _num(1.0, -1e6, 1e6, "multiplier")
    shift: Number = _num(8.0, -1e6, 1e6, "offset")


class UnitChangeParams(FaultParams):
    feature: Integer = Field(DEFAULT_DRIFT_FEATURES[0], description="feature index")
    factor: Number = _num(1000.0, -1e6, 1e6, "multiplier (x1000: metres to millimetres)")


class UnseenCategoriesParams(FaultParams):
    fraction: Number = _num(0.3, 0.0, 1.0, "share of rows affected")
    features: Indices = Field(default_factory=lambda: list(DEFAULT_DRIFT_FEATURES),
                              description="feature indices, comma-separated")
    low: Integer = Field(17, ge=-1_000_000_000, le=1_000_000_000, description="lowest unseen code")
    high: Integer = Field(64, ge=-1_000_000_000, le=1_000_000_000, description="highest unseen code")

    @model_validator(mode="after")
    def _ordered(self) -> UnseenCategoriesParams:
        if self.high < self.low:
            raise FaultParamError("high", f"must be >= low ({self.low}), got {self.high}")
        return self


class LabelStallParams(FaultParams):
    mode: Literal["hold", "drop"] = Field("hold", description="hold (released on clear) or drop")


class ConceptDriftParams(FaultParams):
    fraction: Number = _num(0.5, 0.0, 1.0, "share of labels remapped")
    shift: Integer = Field(1, ge=1, description="label shift (1..classes-1)")


class MemoryBalloonParams(FaultParams):
    megabytes: Integer = Field(768, ge=1, le=65_536, description="target size")
    step_megabytes: Integer = Field(64, ge=1, le=65_536, description="growth per step")
    interval_seconds: Number = _num(0.5, 0.0, 3600.0, "time between steps")


# --- slow faults (issue 18): each limit is the point of harm the fault bench measures its margin against ----
class MemoryLeakParams(FaultParams):
    rate: Number = _num(2.0, 0.01, 1024.0, "megabytes leaked per second")
    limit_megabytes: Integer = Field(1024, ge=1, le=65_536,
                                     description="leaked megabytes at which the server dies (the point of harm)")
    oom: Flag = Field(True, description="exit 137 at the limit (false: stop growing)")


class LatencyCreepParams(FaultParams):
    ramp: Number = _num(0.001, 1e-6, 10.0, "seconds of latency added per second")
    max_seconds: Number = _num(1.0, 0.0, 600.0, "most latency added (the point of harm)")


class DiskFillParams(FaultParams):
    rate: Number = _num(20.0, 0.01, 4096.0, "megabytes written per second")
    megabytes: Integer = Field(1024, ge=1, le=1_048_576, description="megabytes written in all (the point of harm)")


PARAMS: dict[FaultKind, type[FaultParams]] = {
    FaultKind.NONFINITE_WEIGHTS: NonfiniteWeightsParams,
    FaultKind.EXPLODING_WEIGHTS: ExplodingWeightsParams,
    FaultKind.STARVATION: StarvationParams,
    FaultKind.HANG: HangParams,
    FaultKind.CRASH: CrashParams,
    FaultKind.LATENCY: LatencyParams,
    FaultKind.NULL_FEATURES: NullFeaturesParams,
    FaultKind.INPUT_DRIFT: InputDriftParams,
    FaultKind.UNIT_CHANGE: UnitChangeParams,
    FaultKind.UNSEEN_CATEGORIES: UnseenCategoriesParams,
    FaultKind.LABEL_STALL: LabelStallParams,
    FaultKind.CONCEPT_DRIFT: ConceptDriftParams,
    FaultKind.MEMORY_BALLOON: MemoryBalloonParams,
    FaultKind.MEMORY_LEAK: MemoryLeakParams,
    FaultKind.LATENCY_CREEP: LatencyCreepParams,
    FaultKind.DISK_FILL: DiskFillParams,
}


def validate_params(model: type[FaultParams], raw: dict[str, Any]) -> FaultParams:
    """``raw`` validated against ``model``; the first problem raises :class:`FaultParamError`."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = first.get("loc", ())
        field = str(loc[0]) if loc else "params"
        if first.get("type") == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            raise FaultParamError(field, f"unknown parameter; known: {known}") from None
        if first.get("type") == "missing":
            raise FaultParamError(field, f"required (--param {field}=...)") from None
        ctx_error = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_error, FaultParamError):
            raise ctx_error from None
        msg = str(first.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        raise FaultParamError(field, msg) from None


def parse_fault_params(kind: FaultKind, raw: dict[str, Any]) -> FaultParams:
    """The parameters of fault ``kind`` from ``raw`` (JSON values, or the CLI's strings)."""
    return validate_params(PARAMS[kind], raw)
