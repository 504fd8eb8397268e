"""Reading the model server's HTTP API (docs/contracts.md): /metrics, /predictions, /feedback, /reference.

>>> client = ModelServerClient("http://127.0.0.1:8081", timeout=5.0)
>>> health = client.healthz(); samples = client.metrics()
>>> page = client.predictions(after=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from collector.windows import LabelRecord, PredictionRecord
from detectors.errors import IncidentdError
from detectors.types import Reference, Sample

ARROW_STREAM = "application/vnd.apache.arrow.stream"


class ScrapeError(IncidentdError):
    """The model server could not be read (down, timeout, bad status or payload)."""


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    version: str | None
    pid: int | None


@dataclass(frozen=True, slots=True)
class Page:
    cursor: int
    records: list[Any]


def parse_exposition(text: str, at: float = 0.0) -> list[Sample]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client (never by hand)."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(
                Sample(
                    name=s.name,
                    labels=tuple(sorted(s.labels.items())),
                    timestamp=float(s.timestamp) if s.timestamp is not None else at,
                    value=float(s.value),
                )
            )
    return out


class ModelServerClient:
    """A thin synchronous client; every failure becomes :class:`ScrapeError`."""

    def __init__(self, base_url: str, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._owns_client = client is None
        self._arrow: bool | None = None  # does the server give Arrow pages? (None: not asked yet)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        try:
            resp = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ScrapeError(f"GET {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise ScrapeError(f"GET {self.base_url}{path}: HTTP {resp.status_code}")
        return resp

    def _json(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        resp = self._get(path, params)
        try:
            data = resp.json()
        except ValueError as exc:
            raise ScrapeError(f"GET {self.base_url}{path}: body is not JSON") from exc
        if not isinstance(data, dict):
            raise ScrapeError(f"GET {self.base_url}{path}: body is not a JSON object")
        return data

    def healthz(self) -> Health:
        d = self._json("/healthz")
        pid = d.get("pid")
        return Health(
            status=str(d.get("status", "")),
            version=None if d.get("version") is None else str(d["version"]),
            pid=int(pid) if isinstance(pid, int | float | str) and str(pid).isdigit() else None,
        )

    def metrics(self, at: float = 0.0) -> list[Sample]:
        text = self._get("/metrics").text
        try:
            return parse_exposition(text, at)
        except ValueError as exc:
            raise ScrapeError(f"GET {self.base_url}/metrics: unparsable exposition: {exc}") from exc

    def _page(self, path: str, after: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        d = self._json(path, {"after": after, "limit": limit})
        try:
            cursor = int(d["cursor"])
            records = list(d.get("records") or [])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScrapeError(f"GET {self.base_url}{path}: missing cursor/records") from exc
        return cursor, records

    def predictions(self, after: int, limit: int = 1000) -> Page:
        # issue 13: ask for the compact columnar page; a server without it answers JSON (or 422 on the
        # unknown format value) and is read as before.
        if self._arrow is not False:
            try:
                resp = self._get("/predictions", {"after": after, "limit": limit, "format": "arrow"})
            except ScrapeError:
                if self._arrow:
                    raise
                self._arrow = False
            else:
                if resp.headers.get("content-type", "").startswith(ARROW_STREAM):
                    self._arrow = True
                    return _arrow_page(resp.content, f"GET {self.base_url}/predictions")
                self._arrow = False
        cursor, raw = self._page("/predictions", after, limit)
        try:
            return Page(cursor, [PredictionRecord.from_json(r) for r in raw])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScrapeError(f"GET {self.base_url}/predictions: bad record: {exc}") from exc

    def feedback(self, after: int, limit: int = 1000) -> Page:
        cursor, raw = self._page("/feedback", after, limit)
        try:
            return Page(cursor, [LabelRecord.from_json(r) for r in raw])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScrapeError(f"GET {self.base_url}/feedback: bad record: {exc}") from exc

    def reference(self) -> Reference:
        d = self._json("/reference")
        try:
            inputs = np.asarray(d["inputs"], dtype=float)
            preds = np.asarray(d.get("predictions") or [], dtype=float)
            names = tuple(str(n) for n in d.get("feature_names") or [f"f{i}" for i in range(inputs.shape[1])])
            version = str(d["version"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ScrapeError(f"GET {self.base_url}/reference: bad payload: {exc}") from exc
        if inputs.ndim != 2 or inputs.shape[1] != len(names):
            raise ScrapeError(
                f"GET {self.base_url}/reference: inputs shape {inputs.shape} does not match "
                f"{len(names)} feature_names"
            )
        return Reference(
            version=version,
            feature_names=names,
            inputs=inputs,
            predictions=preds[np.isfinite(preds)].astype(int),
        )


def _arrow_page(body: bytes, what: str) -> Page:
    """A ``format=arrow`` page (collector.instrumentation.prediction_page_arrow) as prediction records."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
        cursor = int((table.schema.metadata or {})[b"cursor"])
        n = table.num_rows
        ids = table.column("request_id").to_pylist()
        ts = table.column("ts").to_numpy()
        versions = table.column("version").to_pylist()
        widths = table.column("width").to_numpy()
        inputs = table.column("inputs").combine_chunks()
        width = inputs.type.list_size if pa.types.is_fixed_size_list(inputs.type) else 0
        matrix = (
            inputs.flatten().to_numpy(zero_copy_only=False).reshape(n, width) if width else np.empty((n, 0))
        )
        preds = table.column("prediction").to_pylist()
        finite = table.column("finite").to_pylist()
        lat = table.column("latency_seconds").to_numpy()
        errors = table.column("error").to_pylist()
    except (pa.ArrowException, KeyError, ValueError, TypeError) as exc:
        raise ScrapeError(f"{what}: bad Arrow page: {exc}") from exc
    records = [
        PredictionRecord(
            request_id=ids[i],
            ts=float(ts[i]),
            version=versions[i] or "",
            inputs=matrix[i, : int(widths[i])].astype(float),
            prediction=preds[i],
            finite=bool(finite[i]),
            latency_seconds=float(lat[i]),
            error=errors[i] or None,
        )
        for i in range(n)
    ]
    return Page(cursor, records)
