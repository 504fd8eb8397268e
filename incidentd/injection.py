"""The fault taxonomy and how each fault is injected into a running demo model server (the library under
``incidentd inject`` and ``incidentd bench``).

Every fault is named after what it simulates (docs/faults.md). Most go to the server's
``POST /admin/faults`` (it must run with ``--enable-fault-injection``); ``bad_version`` is a
``POST /admin/load``; the GPU faults rewrite the sidecar's simulated GPU state file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from incidentd.model_server.fault_params import (
    PARAMS,
    FaultKind,
    FaultParamError,
    FaultParams,
    validate_params,
)


# Parameters of the faults that go to the server are the server's own models (one per fault kind, in
# incidentd/model_server/fault_params.py); the few that act elsewhere (a load, the GPU file) are declared here.
class BadVersionParams(FaultParams):
    version: str = Field(min_length=1, description="registry version to deploy")


class GpuThermalParams(FaultParams):
    gpu_state: Path = Field(description="the sidecar's simulated GPU state file (incidentd sidecar --gpu "
                                        "simulated --gpu-sim-state FILE)")
    gpu: int | None = Field(None, ge=0, description="only this GPU (index); default: every simulated GPU")
    temperature: float = Field(92.0, allow_inf_nan=False, description="degrees Celsius")
    throttled: bool = Field(True, description="throttle flag")


class GpuErrorsParams(FaultParams):
    gpu_state: Path = Field(description="the sidecar's simulated GPU state file (incidentd sidecar --gpu "
                                        "simulated --gpu-sim-state FILE)")
    gpu: int | None = Field(None, ge=0, description="only this GPU (index); default: every simulated GPU")
    ecc: int = Field(1, ge=0, description="ECC errors to add (counters only grow)")
    xid: int = Field(0, ge=0, description="Xid errors to add (counters only grow)")


class ClearParams(FaultParams):
    gpu_state: Path | None = Field(None, description="also cool the simulated GPUs in this file")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault of the taxonomy: what it simulates, how it is injected, its parameter model."""

    name: str
    domain: Literal["model", "data", "hardware"]
    simulates: str                      # the root cause diagnosis should find
    via: Literal["server", "load", "gpu"]
    summary: str
    server_fault: FaultKind | None = None   # the /admin/faults kind when via == "server"
    params: type[FaultParams] = FaultParams

    @classmethod
    def server(cls, name: str, domain: Literal["model", "data", "hardware"], simulates: str, summary: str,
               kind: FaultKind) -> FaultSpec:
        return cls(name, domain, simulates, "server", summary, kind, PARAMS[kind])


FAULTS: dict[str, FaultSpec] = {f.name: f for f in [
    # ------------------------------------------------------------------ model
    FaultSpec.server("nonfinite_weights", "model", "model.nonfinite_weights",
                     "write NaN/inf into random entries of the live weights", FaultKind.NONFINITE_WEIGHTS),
    FaultSpec.server("exploding_weights", "model", "model.exploding_weights",
                     "multiply random entries of the live weights (finite but huge)", FaultKind.EXPLODING_WEIGHTS),
    FaultSpec("bad_version", "model", "model.bad_version", "load",
              "deploy another registry version (POST /admin/load), e.g. the shuffled-label v2",
              params=BadVersionParams),
    FaultSpec.server("concept_drift", "model", "model.concept_drift",
                     "remap a fraction of incoming /feedback labels y -> (y + shift) mod classes",
                     FaultKind.CONCEPT_DRIFT),
    # ------------------------------------------------------------------ data
    FaultSpec.server("covariate_drift", "data", "data.covariate_drift",
                     "shift features of a fraction of incoming requests: x[f] = x[f] * scale + shift",
                     FaultKind.INPUT_DRIFT),
    FaultSpec.server("unit_change", "data", "data.schema_change",
                     "schema/unit change: one feature of every request multiplied by a factor", FaultKind.UNIT_CHANGE),
    FaultSpec.server("null_features", "data", "data.missing_features",
                     "a fraction of input values arrive as null (imputed by the server)", FaultKind.NULL_FEATURES),
    FaultSpec.server("unseen_categories", "data", "data.unseen_categories",
                     "integer codes never seen in training (pixel intensities above 16) in some features",
                     FaultKind.UNSEEN_CATEGORIES),
    FaultSpec.server("label_stall", "data", "data.label_stall",
                     "POST /feedback stops recording labels (held and released on clear, or dropped)",
                     FaultKind.LABEL_STALL),
    # ------------------------------------------------------------------ hardware
    FaultSpec("gpu_thermal", "hardware", "hardware.gpu_thermal", "gpu",
              "a simulated GPU runs hot and throttles", params=GpuThermalParams),
    FaultSpec("gpu_errors", "hardware", "hardware.gpu_errors", "gpu",
              "a simulated GPU reports more ECC and/or Xid errors (the counters increase)", params=GpuErrorsParams),
    FaultSpec.server("memory_pressure", "hardware", "hardware.memory_pressure",
                     "a balloon inside the server grows resident memory step by step", FaultKind.MEMORY_BALLOON),
    FaultSpec.server("cpu_contention", "hardware", "hardware.cpu_contention",
                     "threads spinning in Python hold the GIL: latency rises, process CPU saturates",
                     FaultKind.STARVATION),
    FaultSpec.server("crash", "hardware", "hardware.process_crash", "the process exits after answering",
                     FaultKind.CRASH),
    FaultSpec.server("hang", "hardware", "hardware.process_hang",
                     "/predict blocks (health and metrics still answer)", FaultKind.HANG),
    FaultSpec.server("latency", "hardware", "hardware.cpu_contention",
                     "every /predict sleeps this long (slow dependency)", FaultKind.LATENCY),
    # ------------------------------------------------------------------ slow faults
    FaultSpec.server("memory_leak", "hardware", "hardware.memory_leak",
                     "resident memory grows steadily (a leak); at its limit the server exits 137 like an OOM kill",
                     FaultKind.MEMORY_LEAK),
    FaultSpec.server("latency_creep", "hardware", "hardware.cpu_contention",
                     "every /predict waits a little longer each second (creeping contention or a slowing "
                     "dependency)", FaultKind.LATENCY_CREEP),
    FaultSpec.server("disk_fill", "hardware", "hardware.disk_full",
                     "the server writes ballast next to its registry until megabytes are written (removed on clear)",
                     FaultKind.DISK_FILL),
]}

ALIASES = {"leak": "memory_leak", "disk_full": "disk_fill", "input_drift": "covariate_drift",
           "starvation": "cpu_contention", "memory_balloon": "memory_pressure", "nonfinite": "nonfinite_weights",
           "process_crash": "crash", "process_hang": "hang"}


class InjectError(Exception):
    """Bad usage (exit 2) or the target refused / could not be reached (exit 1)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _bad(msg: str) -> InjectError:
    return InjectError(msg, 2)


def resolve(fault: str) -> FaultSpec:
    name = ALIASES.get(fault, fault)
    if name not in FAULTS:
        raise _bad(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))} (or 'clear', 'list')")
    return FAULTS[name]


def parse_params(spec: FaultSpec, pairs: list[str]) -> FaultParams:
    """``["k=v", ...]`` -> the fault's parameter model; malformed, repeated, unknown, bad or missing ones
    raise (exit 2) with the same message the model server gives for the same value."""
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _bad(f"--param {pair!r}: expected KEY=VALUE")
        if key in raw:
            raise _bad(f"parameter {key!r} given twice")
        raw[key] = value.strip()
    try:
        return validate_params(spec.params, raw)
    except FaultParamError as e:
        raise _bad(str(e)) from None


# ---------------------------------------------------------------- talking to the target


def _request(method: str, url: str, body: Any, timeout: float, token: str | None = None) -> Any:
    import httpx

    from incidentd.model_server.auth import TOKEN_ENV

    token = token or os.environ.get(TOKEN_ENV)   # the model server's admin token, when it has one
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.request(method, url, json=body, timeout=timeout, headers=headers)
    except httpx.HTTPError as e:
        raise InjectError(f"{method} {url} failed: {e}", 1) from e
    try:
        data = r.json()
    except ValueError:
        data = {"detail": r.text[:300]}
    if r.status_code == 422:
        raise _bad(_describe_422(data))
    if r.status_code == 401:
        raise InjectError(f"{url} refused: it needs its admin token (set {TOKEN_ENV})", 1)
    if r.status_code == 403:
        raise InjectError(f"{url} refused: {_detail(data)} (start the model server with "
                          "--enable-fault-injection)", 1)
    if r.status_code >= 400:
        raise InjectError(f"{method} {url} answered {r.status_code}: {_detail(data)}", 1)
    return data


def _detail(data: Any) -> str:
    return str(data.get("detail", data)) if isinstance(data, dict) else str(data)


def _describe_422(data: Any) -> str:
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(x) for x in detail[0].get("loc", [])]
        if len(loc) >= 3 and loc[:2] == ["body", "params"]:
            return str(detail[0].get("msg", ""))   # the server's FaultParamError: the text parse_params gives
        return f"{'.'.join(loc)}: {detail[0].get('msg', '')}"
    return f"rejected: {_detail(data)}"


def update_gpu_state(path: Path, params: GpuThermalParams | GpuErrorsParams | None) -> dict[str, Any]:
    """Rewrite the simulated GPU state file atomically (write a temp file, then os.replace).

    ``None`` clears: cool down and stop throttling; the error counters stay (they are cumulative).
    """
    path = path.expanduser().resolve()
    state: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text() or "{}")
        except (OSError, ValueError) as e:
            raise InjectError(f"{path}: cannot read the GPU state file: {e}", 1) from e
        if not isinstance(loaded, dict):
            raise InjectError(f"{path}: the GPU state file is not a JSON object", 1)
        state = loaded
    if params is None:
        for s in [state, *(state.get("gpus") or {}).values()]:
            if isinstance(s, dict):
                s.pop("temperature_celsius", None)
                s.pop("throttled", None)
    else:
        gpu = params.gpu
        scope = state if gpu is None else state.setdefault("gpus", {}).setdefault(str(gpu), {})
        if isinstance(params, GpuThermalParams):
            scope["temperature_celsius"] = params.temperature
            scope["throttled"] = params.throttled
        else:
            for add, field_name in ((params.ecc, "ecc_errors"), (params.xid, "xid_errors")):
                # a per-GPU override starts from the value every GPU had, so the counter never goes down
                base = scope.get(field_name, state.get(field_name, 0) if gpu is not None else 0)
                scope[field_name] = int(base or 0) + add
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gpu-state-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, sort_keys=True)
    os.replace(tmp, path)
    return state


def inject(fault: str, pairs: list[str], target: str, timeout: float = 10.0,
           token: str | None = None) -> dict[str, Any]:
    """Inject one fault; returns a JSON-able record of what was done. Raises InjectError."""
    spec = resolve(fault)
    params = parse_params(spec, pairs)
    given = params.model_dump(mode="json", exclude_unset=True)   # the server applies its own defaults
    base = target.rstrip("/")
    record: dict[str, Any] = {"fault": spec.name, "domain": spec.domain, "simulates": spec.simulates,
                              "target": base, "params": given}
    if isinstance(params, GpuThermalParams | GpuErrorsParams):
        state = update_gpu_state(params.gpu_state, params)
        return {**record, "via": f"file {params.gpu_state.expanduser().resolve()}", "gpu_state": state}
    if isinstance(params, BadVersionParams):
        res = _request("POST", base + "/admin/load", {"version": params.version}, timeout, token)
        return {**record, "via": "POST /admin/load", "response": res}
    assert spec.server_fault is not None
    res = _request("POST", base + "/admin/faults", {"fault": spec.server_fault.value, "params": given}, timeout,
                   token)
    return {**record, "via": f"POST /admin/faults {spec.server_fault.value}", "response": res}


def clear(pairs: list[str], target: str, timeout: float = 10.0, token: str | None = None) -> dict[str, Any]:
    spec = FaultSpec("clear", "hardware", "", "server", "", params=ClearParams)
    params = parse_params(spec, pairs)
    assert isinstance(params, ClearParams)
    base = target.rstrip("/")
    out: dict[str, Any] = {"fault": "clear", "target": base,
                           "response": _request("DELETE", base + "/admin/faults", None, timeout, token)}
    if params.gpu_state is not None:
        out["gpu_state"] = update_gpu_state(params.gpu_state, None)
    return out


_JSON_TYPES = {"number": "float", "integer": "int", "boolean": "bool", "string": "str", "array": "ints"}


def _type_name(prop: dict[str, Any]) -> str:
    """The parameter's type as the CLI reads it, from the model's JSON schema."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    first = options[0] if options else {}
    if first.get("format") == "path":
        return "path"
    if "enum" in first:
        return "choice"
    return _JSON_TYPES.get(str(first.get("type")), str(first.get("type")))


def catalog() -> list[dict[str, Any]]:
    """Every fault and its parameters, read from the parameter models."""
    out = []
    for f in FAULTS.values():
        params = {}
        props = f.params.model_json_schema()["properties"]
        for k, info in f.params.model_fields.items():
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            params[k] = {"type": _type_name(props[k]), "default": default, "required": info.is_required(),
                         "help": info.description or ""}
        out.append({"fault": f.name, "domain": f.domain, "simulates": f.simulates, "summary": f.summary,
                    "params": params})
    return out
