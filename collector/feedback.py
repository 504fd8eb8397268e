"""Delayed labels posted to the sidecar (``POST /feedback``), keyed by the request id of the proxy or ce-id.

A label may arrive before its prediction (the payload event is late, or the cycle has not run yet), so a
label whose id is unknown waits in a bounded book; after ``max_age_seconds`` (or when the book is full) it
is dropped and counted as unmatched, never silently lost.

    >>> inbox = FeedbackInbox()
    >>> inbox.post(parse_feedback({"request_id": "r1", "label": 2}), now)
    >>> book = LabelBook(max_pending=100_000, max_age_seconds=3600)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collector.adapters.payloads import row_ids
from collector.windows import LabelRecord
from detectors.errors import InvalidInput


class FeedbackItem(BaseModel):
    """One label: ``label`` is a class, or a list of classes for the rows of a batch request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=512)
    label: int | list[int]


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] = Field(min_length=1, max_length=100_000)


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """``{"request_id", "label"}`` or ``{"items": [...]}``; InvalidInput names the bad field."""
    try:
        if isinstance(body, dict) and "items" in body:
            return FeedbackBatch.model_validate(body).items
        return [FeedbackItem.model_validate(body)]
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        raise InvalidInput(f"feedback field {loc}: {e['msg']}") from None


def to_labels(items: Iterable[FeedbackItem], now: float) -> list[LabelRecord]:
    """A list label spreads over the rows of a batch request (ids ``rid/0``, ``rid/1``, ...)."""
    out: list[LabelRecord] = []
    for it in items:
        if isinstance(it.label, list):
            ids = row_ids(it.request_id, len(it.label))
            out.extend(LabelRecord(request_id=i, label=lab, ts=now) for i, lab in zip(ids, it.label))
        else:
            out.append(LabelRecord(request_id=it.request_id, label=it.label, ts=now))
    return out


class FeedbackInbox:
    """Thread-safe hand-off of posted labels to the sidecar cycle (bounded; overflow counted)."""

    def __init__(self, max_items: int = 200_000) -> None:
        self.max_items = int(max_items)
        self._items: list[LabelRecord] = []
        self._lock = threading.Lock()
        self.received_total = 0
        self.dropped_total = 0

    def post(self, labels: list[LabelRecord]) -> int:
        with self._lock:
            room = max(0, self.max_items - len(self._items))
            taken = labels[:room]
            self._items.extend(taken)
            self.received_total += len(taken)
            self.dropped_total += len(labels) - len(taken)
            return len(taken)

    def drain(self) -> list[LabelRecord]:
        with self._lock:
            out, self._items = self._items, []
        return out


class LabelBook:
    """Labels waiting for a prediction with their id, bounded by count and age; the rest are unmatched."""

    def __init__(self, max_pending: int = 100_000, max_age_seconds: float = 3600.0) -> None:
        self.max_pending = int(max_pending)
        self.max_age_seconds = float(max_age_seconds)
        self._pending: OrderedDict[str, LabelRecord] = OrderedDict()
        self.unmatched_total = 0

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, label: LabelRecord) -> None:
        self._pending[label.request_id] = label
        self._pending.move_to_end(label.request_id)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.unmatched_total += 1

    def take(self, request_ids: Iterable[str]) -> list[LabelRecord]:
        out = []
        for rid in request_ids:
            lab = self._pending.pop(rid, None)
            if lab is not None:
                out.append(lab)
        return out

    def expire(self, now: float) -> int:
        cutoff = now - self.max_age_seconds
        n = 0
        while self._pending:
            rid, lab = next(iter(self._pending.items()))
            if lab.ts >= cutoff:
                break
            del self._pending[rid]
            n += 1
        self.unmatched_total += n
        return n
