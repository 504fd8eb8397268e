"""PrometheusSource: the Source interface over Prometheus' HTTP API (``/api/v1/query_range``).

    >>> src = PrometheusSource("http://127.0.0.1:9090")                      # doctest: +SKIP
    >>> src.read("model_accuracy_ratio", {"model": "digits"}, t - 600, t, 10.0)  # doctest: +SKIP
    [Series(name='model_accuracy_ratio', labels=(('model', 'digits'), ('version', 'v1')), ...)]

Series come back with the labels the sidecar exposes: Prometheus' target labels (``job``,
``instance``) are dropped so that a series has the same identity as in the embedded store. When
two targets expose the same series (``model_requests_total`` is passed through by the sidecar and
also scraped from the model server), the one from ``prefer_job`` wins.
"""
from __future__ import annotations

import logging
from typing import Any

import httpx

from incidentd.errors import SourceUnavailable
from incidentd.sources.base import Series

log = logging.getLogger(__name__)

MAX_POINTS = 11_000          # Prometheus refuses query_range answers above 11,000 points per series


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(metric: str, matchers: dict[str, str] | None) -> str:
    """A PromQL instant-vector selector with exact label matchers."""
    if not matchers:
        return metric
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(matchers.items()))
    return f"{metric}{{{inner}}}"


class PrometheusSource:
    """Reads windows of series from Prometheus; every failure is a ``SourceUnavailable``."""

    def __init__(self, url: str, *, timeout: float = 10.0, prefer_job: str = "incidentd-sidecar",
                 drop_labels: tuple[str, ...] = ("job", "instance"), headers: dict[str, str] | None = None,
                 client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.prefer_job = prefer_job
        self.drop_labels = frozenset(drop_labels)
        self._client = client or httpx.Client(timeout=timeout, headers=headers)

    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]:
        if end < start:
            return []
        step = max(float(step), 0.001, (end - start) / MAX_POINTS)
        params = {"query": selector(metric, matchers), "start": f"{start:.3f}", "end": f"{end:.3f}",
                  "step": f"{step:.3f}"}
        try:
            resp = self._client.get(f"{self.url}/api/v1/query_range", params=params)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"Prometheus at {self.url} unreachable: {exc}") from exc
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or body.get("status") != "success":
            raise SourceUnavailable(f"Prometheus query {params['query']!r} failed ({resp.status_code}): "
                                    f"{body.get('errorType', '')} {body.get('error', resp.text[:200])}".strip())
        return self._series(metric, body.get("data", {}).get("result", []))

    def read_by_model(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
                      step: float) -> dict[str, list[Series]]:
        """One ``query_range`` for every model's series of ``metric``, grouped by the ``model`` label."""
        rest = {k: v for k, v in (matchers or {}).items() if k != "model"}
        out: dict[str, list[Series]] = {}
        for s in self.read(metric, rest, start, end, step):
            m = s.label("model")
            if m:
                out.setdefault(m, []).append(s)
        return out

    def _series(self, metric: str, result: list[dict[str, Any]]) -> list[Series]:
        chosen: dict[tuple[tuple[str, str], ...], tuple[bool, Series]] = {}
        for item in result:
            raw = item.get("metric", {})
            labels = tuple(sorted((k, v) for k, v in raw.items() if k != "__name__" and k not in self.drop_labels))
            values = item.get("values") or ([item["value"]] if "value" in item else [])
            ts = tuple(float(t) for t, _ in values)
            vs = tuple(float(v) for _, v in values)            # "NaN", "+Inf" parse as floats
            if not ts:
                continue
            preferred = raw.get("job") == self.prefer_job
            prior = chosen.get(labels)
            if prior is None or (preferred and not prior[0]):
                chosen[labels] = (preferred, Series(metric, labels, ts, vs))
        return [s for _, s in sorted(chosen.values(), key=lambda p: p[1].labels)]

    def close(self) -> None:
        self._client.close()
