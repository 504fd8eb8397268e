"""Inference payloads of third-party servers turned into prediction records (the drift and accuracy rows).

Two protocols are understood, both as JSON:

* Open Inference Protocol v2 (``POST /v2/models/{m}[/versions/{v}]/infer``): each input tensor is
  ``{name, shape, datatype, data}`` with ``data`` flat or nested, row-major; the first dimension is the
  batch. Tensors are reshaped to (rows, -1) and put side by side, in request order. Several 1-D tensors of
  equal length are columns (MLServer's pandas codec sends one tensor per feature).
* KServe v1 (``POST /v1/models/{m}:predict``): ``{"instances": [...]}`` -> ``{"predictions": [...]}``;
  an instance is a list of numbers or an object (its keys are the feature names, in order). TorchServe's
  ``POST /predictions/{m}[/{v}]`` is read the same way when its handler takes and gives such bodies.

The prediction of a row is its class: the integer output, or the argmax of a row of scores.

    >>> ex = Exchange("r1", "/v2/models/m/infer", body, response, 200, 0.004, ts=now)
    >>> decoded = decode(ex)
    >>> decoded.model, decoded.records[0].inputs
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from collector.windows import PredictionRecord

_V2 = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
_V1 = re.compile(r"^/v1/models/(?P<model>[^/:]+):predict$")
_TS = re.compile(r"^/predictions/(?P<model>[^/]+)(?:/(?P<version>[^/]+))?$")  # TorchServe, v1-style bodies
NUMERIC = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)


class Protocol(StrEnum):
    OIP_V2 = "v2"
    KSERVE_V1 = "v1"


@dataclass(frozen=True, slots=True)
class Route:
    protocol: Protocol
    model: str
    version: str


def route(path: str) -> Route | None:
    """The inference route of a request path, or None for any other path (passed through, not recorded)."""
    m = _V2.match(path)
    if m:
        return Route(Protocol.OIP_V2, m["model"], m["version"] or "")
    m = _V1.match(path)
    if m:
        return Route(Protocol.KSERVE_V1, m["model"], "")
    m = _TS.match(path)
    if m:
        return Route(Protocol.KSERVE_V1, m["model"], m["version"] or "")
    return None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request/response pair as captured (raw bytes; decoding happens off the request path)."""

    request_id: str
    path: str
    request_body: bytes
    response_body: bytes
    status: int
    latency_seconds: float
    ts: float
    endpoint: str = ""  # KServe's ce-endpoint (default / canary), or "" from the proxy
    response_encoding: str = ""  # Content-Encoding of the response body (gzip is undone when decoding)
    model: str = ""  # when the path does not say (CloudEvents)
    version: str = ""


@dataclass(frozen=True, slots=True)
class Decoded:
    model: str
    version: str
    feature_names: tuple[str, ...] | None  # from named v1 instances, else None
    records: tuple[PredictionRecord, ...]


class PayloadError(ValueError):
    """A payload is not a protocol this module reads."""


def _json(body: bytes, encoding: str = "") -> Any:
    if encoding.lower() == "gzip":
        body = gzip.decompress(body)
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None


def _tensor(t: Any) -> np.ndarray | None:
    """One OIP tensor as a float array of its shape (None for BYTES / non-numeric tensors)."""
    if not isinstance(t, dict) or "data" not in t:
        raise PayloadError("a tensor needs name, shape, datatype and data")
    if str(t.get("datatype", "FP64")).upper() not in NUMERIC:
        return None
    shape = [int(s) for s in t.get("shape") or []]
    try:
        arr = np.asarray(t["data"], dtype=float)
        return arr.reshape(shape) if shape else arr
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"tensor {t.get('name')!r}: {exc}") from None


def _v2_inputs(req: Any) -> np.ndarray:
    tensors = [_tensor(t) for t in (req or {}).get("inputs") or []]
    arrays = [a for a in tensors if a is not None]
    if not arrays:
        raise PayloadError("no numeric input tensor")
    if len(arrays) > 1 and all(a.ndim == 1 for a in arrays) and len({a.shape[0] for a in arrays}) == 1:
        return np.stack(arrays, axis=1)  # one tensor per feature
    rows = [a.reshape(1, -1) if a.ndim <= 1 else a.reshape(a.shape[0], -1) for a in arrays]
    if len({r.shape[0] for r in rows}) != 1:
        raise PayloadError("input tensors disagree on the batch size")
    return np.hstack(rows)


def _classes(values: np.ndarray, n: int) -> tuple[list[int | None], list[bool]]:
    """Per row: the predicted class (None when not a class) and whether the output is finite."""
    if values.size == 0:
        return [None] * n, [True] * n
    v = values.reshape(n, -1) if values.size % max(n, 1) == 0 else values.reshape(1, -1)
    preds: list[int | None] = []
    finite: list[bool] = []
    for row in v:
        ok = bool(np.all(np.isfinite(row)))
        finite.append(ok)
        if not ok:
            preds.append(None)
        elif row.size == 1:
            x = float(row[0])
            preds.append(int(x) if x == math.floor(x) else None)
        else:
            preds.append(int(np.argmax(row)))
    return preds, finite


def _v1_instances(req: Any) -> tuple[np.ndarray, tuple[str, ...] | None]:
    inst = (req or {}).get("instances")
    if inst is None:
        inst = (req or {}).get("inputs")
    if not isinstance(inst, list) or not inst:
        raise PayloadError("no instances")
    if isinstance(inst[0], dict):
        names = tuple(str(k) for k in inst[0])
        rows = [[_num(i.get(k)) for k in names] for i in inst]
        return np.asarray(rows, dtype=float), names
    try:
        arr = np.asarray(inst, dtype=float)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"instances are not numeric: {exc}") from None
    return (arr.reshape(-1, 1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)), None


def _num(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def _seldon(req: Any) -> np.ndarray | None:
    """Seldon Core v1 protocol: ``{"data": {"ndarray": [...]}}`` or ``{"data": {"tensor": {...}}}``."""
    data = (req or {}).get("data") if isinstance(req, dict) else None
    if not isinstance(data, dict):
        return None
    if "ndarray" in data:
        arr = np.asarray(data["ndarray"], dtype=float)
    elif "tensor" in data:
        t = data["tensor"]
        arr = np.asarray(t.get("values") or [], dtype=float).reshape([int(s) for s in t.get("shape") or [-1]])
    else:
        return None
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)


def row_ids(request_id: str, n: int) -> list[str]:
    """Ids of the rows of one request: the request id itself for one row, ``id/i`` for a batch."""
    return [request_id] if n == 1 else [f"{request_id}/{i}" for i in range(n)]


def decode(ex: Exchange) -> Decoded:
    """The prediction records of one exchange; PayloadError when the request cannot be read."""
    r = route(ex.path)
    req = _json(ex.request_body)
    protocol = r.protocol if r else (Protocol.KSERVE_V1 if isinstance(req, dict) and "instances" in req else Protocol.OIP_V2)
    model = ex.model or (r.model if r else "")
    version = ex.version or (r.version if r else "")
    names: tuple[str, ...] | None = None
    seldon = _seldon(req)
    if seldon is not None:
        x = seldon
    elif protocol is Protocol.OIP_V2:
        x = _v2_inputs(req)
    else:
        x, names = _v1_instances(req)
    n = int(x.shape[0])
    error = None if 200 <= ex.status < 300 else f"http_{ex.status}"
    preds: list[int | None] = [None] * n
    finite = [True] * n
    if error is None:
        try:
            resp = _json(ex.response_body, ex.response_encoding)
        except PayloadError:
            resp = None
        if isinstance(resp, dict):
            version = version or str(resp.get("model_version") or "")
            model = model or str(resp.get("model_name") or "")
            out = _outputs(resp)
            if out is not None:
                preds, finite = _classes(out, n)
    ids = row_ids(ex.request_id, n)
    # A failed request produced no prediction: it counts as an error, but its inputs stay out of the drift
    # window (an empty row is skipped there).
    empty = np.empty(0)
    records = tuple(
        PredictionRecord(
            request_id=ids[i],
            ts=ex.ts,
            version=version,
            inputs=x[i] if error is None else empty,
            prediction=preds[i],
            finite=finite[i],
            latency_seconds=ex.latency_seconds,
            error=error,
        )
        for i in range(n)
    )
    return Decoded(model=model, version=version, feature_names=names, records=records)


def _outputs(resp: dict[str, Any]) -> np.ndarray | None:
    if "outputs" in resp:
        outs = [_tensor(t) for t in resp.get("outputs") or []]
        outs = [o for o in outs if o is not None]
        return outs[0] if outs else None
    if "predictions" in resp:
        try:
            return np.asarray(resp["predictions"], dtype=float)
        except (TypeError, ValueError):
            return None
    seldon = _seldon(resp)
    return seldon


def request_id_of(body: bytes) -> str | None:
    """The OIP ``id`` of a v2 request body, if it has one."""
    try:
        d = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None
    rid = d.get("id") if isinstance(d, dict) else None
    return str(rid) if isinstance(rid, str | int) and str(rid) else None
