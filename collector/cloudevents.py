"""A CloudEvents sink for model servers' payload loggers: KServe's and Seldon's.

KServe's logger posts each inference request and response as a binary-mode CloudEvent
(``ce-type: org.kubeflow.serving.inference.request`` / ``.response``, the same ``ce-id`` on both, and
``ce-endpoint`` default/canary, ``ce-inferenceservicename``); Seldon's uses
``io.seldon.serving.inference.request`` / ``.response`` (``ce-modelid``). The two halves are paired on
``ce-id`` (either may arrive first); an unpaired half waits a bounded time, then is counted and dropped.
Events are parsed with the ``cloudevents`` SDK.

    >>> sink = CloudEventSink(capture)
    >>> sink.receive(headers, body)      # from POST /cloudevents
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

try:  # cloudevents >= 2 keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.exceptions import GenericException
    from cloudevents.v1.http import from_http
except ImportError:  # pragma: no cover - cloudevents 1.x
    from cloudevents.exceptions import GenericException  # type: ignore[no-redef,import-not-found]
    from cloudevents.http import from_http  # type: ignore[no-redef,import-not-found]

from collector.adapters.payloads import Exchange
from collector.capture import CaptureBuffer
from detectors.errors import IncidentdError


class EventError(IncidentdError):
    """A POST /cloudevents that is not an inference CloudEvent; the message says what is wrong."""


class Half(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


TYPES: dict[str, Half] = {
    "org.kubeflow.serving.inference.request": Half.REQUEST,
    "org.kubeflow.serving.inference.response": Half.RESPONSE,
    "io.seldon.serving.inference.request": Half.REQUEST,
    "io.seldon.serving.inference.response": Half.RESPONSE,
}


@dataclass(frozen=True, slots=True)
class _Waiting:
    half: Half
    body: bytes
    at: float
    endpoint: str
    model: str


def _as_bytes(data: object) -> bytes:
    import json

    if data is None:
        return b""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data).encode()


class CloudEventSink:
    """Pairs request and response events on ``ce-id`` and hands each pair to the capture buffer."""

    def __init__(
        self,
        capture: CaptureBuffer,
        *,
        max_waiting: int = 10_000,
        max_wait_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capture = capture
        self.max_waiting = int(max_waiting)
        self.max_wait_seconds = float(max_wait_seconds)
        self._clock = clock
        self._waiting: OrderedDict[str, _Waiting] = OrderedDict()
        self._lock = threading.Lock()
        self.events_total = 0
        self.paired_total = 0
        self.unpaired_total = 0
        self.pairs_by_endpoint: dict[str, int] = {}  # ce-endpoint (default / canary / "") -> pairs

    def receive(self, headers: Mapping[str, str], body: bytes) -> Half:
        """Take one event; returns which half it was. EventError for anything else."""
        try:
            event = from_http(dict(headers), body)
        except GenericException as exc:
            raise EventError(f"not a CloudEvent: {exc}") from None
        etype = event["type"]
        half = TYPES.get(etype)
        if half is None:
            raise EventError(f"ce-type {etype!r} is not an inference request/response event")
        attrs = event.get_attributes()
        eid = str(attrs["id"])
        endpoint = str(attrs.get("endpoint") or "")
        model = str(attrs.get("inferenceservicename") or attrs.get("modelid") or "")
        data = _as_bytes(event.get_data())
        now = self._clock()
        with self._lock:
            self.events_total += 1
            self._expire(now)
            other = self._waiting.pop(eid, None)
            if other is None or other.half is half:
                self._waiting[eid] = _Waiting(half, data, now, endpoint, model)
                while len(self._waiting) > self.max_waiting:
                    self._waiting.popitem(last=False)
                    self.unpaired_total += 1
                return half
            self.paired_total += 1
            ep = endpoint or other.endpoint
            self.pairs_by_endpoint[ep] = self.pairs_by_endpoint.get(ep, 0) + 1
        req, resp = (data, other.body) if half is Half.REQUEST else (other.body, data)
        req_at = now if half is Half.REQUEST else other.at
        self.capture.put(
            Exchange(
                request_id=eid,
                path="",
                request_body=req,
                response_body=resp,
                status=200,  # the loggers send only answered requests
                latency_seconds=float("nan"),
                ts=req_at,
                endpoint=endpoint or other.endpoint,
                model=model or other.model,
            )
        )
        return half

    def _expire(self, now: float) -> None:
        cutoff = now - self.max_wait_seconds
        while self._waiting:
            eid, w = next(iter(self._waiting.items()))
            if w.at >= cutoff:
                break
            del self._waiting[eid]
            self.unpaired_total += 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)
