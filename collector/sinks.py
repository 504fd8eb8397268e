"""Where the sidecar ships structured events (version changes, scrape failures, drift decisions).

An event is a plain JSON-serializable dict built by :func:`make_event`. Sinks implement the one-method
:class:`EventSink` protocol (plus ``close``); the Elasticsearch sink lives in ``collector.elasticsearch``.

    >>> sink = MemorySink()
    >>> sink.emit([make_event(EventType.VERSION_CHANGE, model="digits", version="v2", at=0.0)])
    >>> sink.events[0]["event_type"]
    'version_change'
"""

from __future__ import annotations

import enum
import json
import logging
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    VERSION_CHANGE = "version_change"
    PROCESS_RESTART = "process_restart"
    SCRAPE_FAILED = "scrape_failed"
    SCRAPE_RECOVERED = "scrape_recovered"
    DRIFT_CHANGED = "drift_changed"
    PREDICTION_DRIFT_CHANGED = "prediction_drift_changed"
    GPU_STATE_CHANGED = "gpu_state_changed"


@runtime_checkable
class EventSink(Protocol):
    def emit(self, events: list[dict[str, Any]]) -> None:
        """Ship a batch of events; raising is allowed (the sidecar counts it and keeps running)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


def make_event(
    kind: EventType, *, model: str, version: str | None, at: float, source: str = "sidecar", **fields: Any
) -> dict[str, Any]:
    """One structured event; ``event_id`` is unique so a durable sink can index idempotently."""
    return {
        "event_id": uuid.uuid4().hex,
        "@timestamp": datetime.fromtimestamp(at, tz=UTC).isoformat(),
        "ts": at,
        "event_type": kind.value,
        "source": source,
        "model": model,
        "version": version,
        **fields,
    }


class NullSink:
    """Drops every event (the default when no sink is configured)."""

    def emit(self, events: list[dict[str, Any]]) -> None:
        return None

    def close(self) -> None:
        return None


class MemorySink:
    """Keeps the last ``maxlen`` events in memory; for tests and the embedded demo."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=maxlen)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def emit(self, events: list[dict[str, Any]]) -> None:
        self._events.extend(events)

    def close(self) -> None:
        return None


class LogSink:
    """Writes each event as one JSON log line at INFO on logger ``collector.events``."""

    def __init__(self, logger_name: str = "collector.events") -> None:
        self._log = logging.getLogger(logger_name)

    def emit(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self._log.info("%s", json.dumps(ev, sort_keys=True, default=str))

    def close(self) -> None:
        return None
