"""``incidentd inject FAULT --target URL``: put one fault of the taxonomy into a running demo model server.

Every fault is named after what it simulates (docs/faults.md). Most go to the server's
``POST /admin/faults`` (it must run with ``--enable-fault-injection``); ``bad_version`` is a
``POST /admin/load``; the GPU faults rewrite the sidecar's simulated GPU state file.

    incidentd inject unit_change --param feature=20 --param factor=1000 --target http://127.0.0.1:8081
    incidentd inject bad_version --param version=v2 --target http://127.0.0.1:8081
    incidentd inject gpu_thermal --param gpu_state=/tmp/gpu.json --target http://127.0.0.1:8081
    incidentd inject clear --target http://127.0.0.1:8081
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

ParamType = Literal["float", "int", "bool", "str", "ints", "path"]


@dataclass(frozen=True, slots=True)
class Param:
    type: ParamType
    help: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault of the taxonomy: what it simulates, how it is injected, its parameters."""

    name: str
    domain: Literal["model", "data", "hardware"]
    simulates: str                      # the root cause diagnosis should find
    via: Literal["server", "load", "gpu"]
    summary: str
    server_fault: str = ""              # the /admin/faults name when via == "server"
    params: dict[str, Param] = field(default_factory=dict)


_GPU = Param("path", "the sidecar's simulated GPU state file (incidentd sidecar --gpu simulated "
                     "--gpu-sim-state FILE)", required=True)
_GPU_INDEX = Param("int", "only this GPU (index); default: every simulated GPU")

FAULTS: dict[str, FaultSpec] = {f.name: f for f in [
    # ------------------------------------------------------------------ model
    FaultSpec("nonfinite_weights", "model", "model.nonfinite_weights", "server",
              "write NaN/inf into random entries of the live weights", "nonfinite_weights", {
                  "tensor": Param("str", "parameter name", "net.0.weight"),
                  "count": Param("int", "entries to damage", 10),
                  "value": Param("str", "nan, inf or -inf", "nan")}),
    FaultSpec("exploding_weights", "model", "model.exploding_weights", "server",
              "multiply random entries of the live weights (finite but huge)", "exploding_weights", {
                  "tensor": Param("str", "parameter name", "net.0.weight"),
                  "count": Param("int", "entries to scale (default 5% of the tensor)"),
                  "scale": Param("float", "multiplier", 1000.0)}),
    FaultSpec("bad_version", "model", "model.bad_version", "load",
              "deploy another registry version (POST /admin/load), e.g. the shuffled-label v2", "", {
                  "version": Param("str", "registry version to deploy", required=True)}),
    FaultSpec("concept_drift", "model", "model.concept_drift", "server",
              "remap a fraction of incoming /feedback labels y -> (y + shift) mod classes", "concept_drift", {
                  "fraction": Param("float", "share of labels remapped", 0.5),
                  "shift": Param("int", "label shift (1..classes-1)", 1)}),
    # ------------------------------------------------------------------ data
    FaultSpec("covariate_drift", "data", "data.covariate_drift", "server",
              "shift features of a fraction of incoming requests: x[f] = x[f] * scale + shift", "input_drift", {
                  "fraction": Param("float", "share of rows shifted", 0.5),
                  "features": Param("ints", "feature indices, comma-separated", "19,20,27,28,35,36,43,44"),
                  "scale": Param("float", "multiplier", 1.0),
                  "shift": Param("float", "offset", 8.0)}),
    FaultSpec("unit_change", "data", "data.schema_change", "server",
              "schema/unit change: one feature of every request multiplied by a factor", "unit_change", {
                  "feature": Param("int", "feature index", 19),
                  "factor": Param("float", "multiplier (x1000: metres to millimetres)", 1000.0)}),
    FaultSpec("null_features", "data", "data.missing_features", "server",
              "a fraction of input values arrive as null (imputed by the server)", "null_features", {
                  "fraction": Param("float", "share of values nulled", 0.3)}),
    FaultSpec("unseen_categories", "data", "data.unseen_categories", "server",
              "integer codes never seen in training (pixel intensities above 16) in some features",
              "unseen_categories", {
                  "fraction": Param("float", "share of rows affected", 0.3),
                  "features": Param("ints", "feature indices, comma-separated", "19,20,27,28,35,36,43,44"),
                  "low": Param("int", "lowest unseen code", 17),
                  "high": Param("int", "highest unseen code", 64)}),
    FaultSpec("label_stall", "data", "data.label_stall", "server",
              "POST /feedback stops recording labels (held and released on clear, or dropped)", "label_stall", {
                  "mode": Param("str", "hold or drop", "hold")}),
    # ------------------------------------------------------------------ hardware
    FaultSpec("gpu_thermal", "hardware", "hardware.gpu_thermal", "gpu",
              "a simulated GPU runs hot and throttles", "", {
                  "gpu_state": _GPU, "gpu": _GPU_INDEX,
                  "temperature": Param("float", "degrees Celsius", 92.0),
                  "throttled": Param("bool", "throttle flag", True)}),
    FaultSpec("gpu_errors", "hardware", "hardware.gpu_errors", "gpu",
              "a simulated GPU reports more ECC and/or Xid errors (the counters increase)", "", {
                  "gpu_state": _GPU, "gpu": _GPU_INDEX,
                  "ecc": Param("int", "ECC errors to add", 1),
                  "xid": Param("int", "Xid errors to add", 0)}),
    FaultSpec("memory_pressure", "hardware", "hardware.memory_pressure", "server",
              "a balloon inside the server grows resident memory step by step", "memory_balloon", {
                  "megabytes": Param("int", "target size", 768),
                  "step_megabytes": Param("int", "growth per step", 64),
                  "interval_seconds": Param("float", "time between steps", 0.5)}),
    FaultSpec("cpu_contention", "hardware", "hardware.cpu_contention", "server",
              "threads spinning in Python hold the GIL: latency rises, process CPU saturates", "starvation", {
                  "threads": Param("int", "burner threads", 4),
                  "seconds": Param("float", "duration (0: until the process exits)", 0.0)}),
    FaultSpec("crash", "hardware", "hardware.process_crash", "server",
              "the process exits after answering", "crash", {
                  "delay_seconds": Param("float", "delay before exit", 0.2),
                  "exit_code": Param("int", "exit status", 3)}),
    FaultSpec("hang", "hardware", "hardware.process_hang", "server",
              "/predict blocks (health and metrics still answer)", "hang", {
                  "seconds": Param("float", "how long", 60.0)}),
    FaultSpec("latency", "hardware", "hardware.cpu_contention", "server",
              "every /predict sleeps this long (slow dependency)", "latency", {
                  "seconds": Param("float", "added latency", 0.5)}),
    # ------------------------------------------------------------------ slow faults (issue 18)
    FaultSpec("memory_leak", "hardware", "hardware.memory_leak", "server",
              "resident memory grows steadily (a leak); at its limit the server exits 137 like an OOM kill",
              "memory_leak", {
                  "rate": Param("float", "megabytes leaked per second", 2.0),
                  "limit_megabytes": Param("int", "leaked megabytes at which the server dies (the point of harm)",
                                           1024),
                  "oom": Param("bool", "exit 137 at the limit (false: stop growing)", True)}),
    FaultSpec("latency_creep", "hardware", "hardware.cpu_contention", "server",
              "every /predict waits a little longer each second (creeping contention or a slowing dependency)",
              "latency_creep", {
                  "ramp": Param("float", "seconds of latency added per second", 0.001),
                  "max_seconds": Param("float", "most latency added (the point of harm)", 1.0)}),
    FaultSpec("disk_fill", "hardware", "hardware.disk_full", "server",
              "the server writes ballast next to its registry until megabytes are written (removed on clear)",
              "disk_fill", {
                  "rate": Param("float", "megabytes written per second", 20.0),
                  "megabytes": Param("int", "megabytes written in all (the point of harm)", 1024)}),
]}

ALIASES = {"leak": "memory_leak", "disk_full": "disk_fill", "input_drift": "covariate_drift", "starvation": "cpu_contention", "memory_balloon": "memory_pressure",
           "nonfinite": "nonfinite_weights", "process_crash": "crash", "process_hang": "hang"}


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


def _convert(fault: str, key: str, p: Param, raw: str) -> Any:
    def fail(expected: str) -> InjectError:
        return _bad(f"parameter {key!r} of {fault}: expected {expected}, got {raw!r}")

    if p.type == "float":
        try:
            v = float(raw)
        except ValueError:
            raise fail("a number") from None
        if not math.isfinite(v):
            raise fail("a finite number")
        return v
    if p.type == "int":
        try:
            return int(raw)
        except ValueError:
            raise fail("an integer") from None
    if p.type == "bool":
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise fail("true or false")
    if p.type == "ints":
        try:
            out = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise fail("comma-separated integers") from None
        if not out:
            raise fail("at least one integer")
        return out
    if not raw:
        raise fail("a non-empty value")
    return raw


def parse_params(spec: FaultSpec, pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed parameters; unknown, repeated, malformed or missing ones raise (exit 2)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _bad(f"--param {pair!r}: expected KEY=VALUE")
        if key not in spec.params:
            known = ", ".join(spec.params) or "none"
            raise _bad(f"unknown parameter {key!r} for fault {spec.name}; known: {known}")
        if key in out:
            raise _bad(f"parameter {key!r} given twice")
        out[key] = _convert(spec.name, key, spec.params[key], raw.strip())
    missing = [k for k, p in spec.params.items() if p.required and k not in out]
    if missing:
        raise _bad(f"fault {spec.name} needs parameter {missing[0]!r} (--param {missing[0]}=...)")
    return out


# ---------------------------------------------------------------- talking to the target


def _request(method: str, url: str, body: Any, timeout: float) -> Any:
    import httpx

    try:
        r = httpx.request(method, url, json=body, timeout=timeout)
    except httpx.HTTPError as e:
        raise InjectError(f"{method} {url} failed: {e}", 1) from e
    try:
        data = r.json()
    except ValueError:
        data = {"detail": r.text[:300]}
    if r.status_code == 422:
        raise _bad(_describe_422(data))
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
            return f"parameter {loc[2]!r}: {detail[0].get('msg', '')}"
        return f"{'.'.join(loc)}: {detail[0].get('msg', '')}"
    return f"rejected: {_detail(data)}"


def update_gpu_state(path: Path, spec: FaultSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the simulated GPU state file atomically (write a temp file, then os.replace)."""
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
    gpu = params.get("gpu")
    if gpu is not None and gpu < 0:
        raise _bad(f"parameter 'gpu': expected an index >= 0, got {gpu}")
    scope = state if gpu is None else state.setdefault("gpus", {}).setdefault(str(gpu), {})
    if spec.name == "gpu_thermal":
        scope["temperature_celsius"] = params.get("temperature", spec.params["temperature"].default)
        scope["throttled"] = params.get("throttled", spec.params["throttled"].default)
    elif spec.name == "gpu_errors":
        for key, field_name in (("ecc", "ecc_errors"), ("xid", "xid_errors")):
            add = params.get(key, spec.params[key].default)
            if add < 0:
                raise _bad(f"parameter {key!r}: error counters only grow, got {add}")
            # a per-GPU override starts from the value every GPU had, so the counter never goes down
            base = scope.get(field_name, state.get(field_name, 0) if gpu is not None else 0)
            scope[field_name] = int(base or 0) + add
    else:  # clear: cool down and stop throttling; counters stay (they are cumulative)
        for s in [state, *(state.get("gpus") or {}).values()]:
            if isinstance(s, dict):
                s.pop("temperature_celsius", None)
                s.pop("throttled", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gpu-state-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, sort_keys=True)
    os.replace(tmp, path)
    return state


def inject(fault: str, pairs: list[str], target: str, timeout: float = 10.0) -> dict[str, Any]:
    """Inject one fault; returns a JSON-able record of what was done. Raises InjectError."""
    spec = resolve(fault)
    params = parse_params(spec, pairs)
    base = target.rstrip("/")
    record: dict[str, Any] = {"fault": spec.name, "domain": spec.domain, "simulates": spec.simulates,
                              "target": base, "params": params}
    if spec.via == "gpu":
        path = Path(params.pop("gpu_state"))
        state = update_gpu_state(path, spec, params)
        return {**record, "via": f"file {path.expanduser().resolve()}", "gpu_state": state}
    if spec.via == "load":
        res = _request("POST", base + "/admin/load", {"version": params["version"]}, timeout)
        return {**record, "via": "POST /admin/load", "response": res}
    res = _request("POST", base + "/admin/faults", {"fault": spec.server_fault, "params": params}, timeout)
    return {**record, "via": f"POST /admin/faults {spec.server_fault}", "response": res}


def clear(pairs: list[str], target: str, timeout: float = 10.0) -> dict[str, Any]:
    spec = FaultSpec("clear", "hardware", "", "server", "", "", {
        "gpu_state": Param("path", "also cool the simulated GPUs in this file")})
    params = parse_params(spec, pairs)
    base = target.rstrip("/")
    out: dict[str, Any] = {"fault": "clear", "target": base,
                           "response": _request("DELETE", base + "/admin/faults", None, timeout)}
    if "gpu_state" in params:
        out["gpu_state"] = update_gpu_state(Path(params["gpu_state"]), spec, {})
    return out


def catalog() -> list[dict[str, Any]]:
    return [{"fault": f.name, "domain": f.domain, "simulates": f.simulates, "summary": f.summary,
             "params": {k: {"type": p.type, "default": p.default, "required": p.required, "help": p.help}
                        for k, p in f.params.items()}} for f in FAULTS.values()]


# ---------------------------------------------------------------- the command


def register(app: typer.Typer) -> None:
    app.command("inject")(inject_command)


def inject_command(
    fault: Annotated[str, typer.Argument(help="Fault to inject, 'clear' to clear runtime faults, or 'list'.",
                                         show_default=False)],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE, repeatable.")] = None,
    target: Annotated[str, typer.Option("--target", help="Base URL of the model server.")
                      ] = "http://127.0.0.1:8081",
    timeout: Annotated[float, typer.Option("--timeout", help="HTTP timeout in seconds.")] = 10.0,
) -> None:
    """Inject a fault of the taxonomy (model, data, hardware) into a running demo model server.

    Prints what was injected as one JSON object; 'incidentd inject list' prints every fault and its parameters.

    Exit 2: unknown fault or bad parameter (named). Exit 1: the target refused or cannot be reached.
    """
    pairs = list(param or [])
    try:
        if fault == "list":
            out: Any = catalog()
        elif fault == "clear":
            out = clear(pairs, target, timeout)
        else:
            out = inject(fault, pairs, target, timeout)
    except InjectError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    typer.echo(json.dumps(out, sort_keys=True))
