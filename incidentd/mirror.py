"""Mirrors incidents and actions to Elasticsearch (searchable in Kibana): only what changed, every cycle."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Protocol

from incidentd.store import Store

log = logging.getLogger(__name__)


class MirrorSink(Protocol):
    def mirror_incident(self, doc: dict[str, Any]) -> None: ...

    def mirror_action(self, doc: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Mirror:
    """Sends an incident or action when its stored document changed since it was last sent."""

    def __init__(self, store: Store, sink: MirrorSink, window: int = 500):
        self.store = store
        self.sink = sink
        self.window = window
        self._sent: dict[str, str] = {}

    @staticmethod
    def _digest(doc: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def sync(self) -> int:
        """Send what changed; returns how many documents were sent.

        Only the digests of documents in this sync are kept: an incident that left the window (of models
        long gone, too) re-enters it only by changing, and is then sent again anyway; memory stays bounded.
        """
        n = 0
        seen: dict[str, str] = {}
        for inc in self.store.incidents(limit=self.window):
            doc = {**inc.to_dict(), "timeline": [t.to_dict() for t in self.store.timeline(inc.id)]}
            if self._changed(inc.id, doc, seen):
                self.sink.mirror_incident(doc)
                n += 1
        for rec in self.store.actions():
            act = rec.to_dict()
            # Actions carry no updated_at; their audit trail grows with every state change.
            doc = {**act, "updated_at": max([rec.created_at] + [a.at for a in rec.audit])}
            if self._changed(rec.id, doc, seen):
                self.sink.mirror_action(doc)
                n += 1
        self._sent = seen
        return n

    def _changed(self, key: str, doc: dict[str, Any], seen: dict[str, str]) -> bool:
        d = self._digest(doc)
        seen[key] = d
        return self._sent.get(key) != d
