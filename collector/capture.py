"""The bounded hand-off of captured request/response pairs from the request path to the sidecar cycle.

Putting is O(1) and never blocks a caller; past ``max_items`` or ``max_bytes`` a pair is dropped and
counted, so a payload flood costs bounded memory.

    >>> buf = CaptureBuffer(max_items=10_000, max_bytes=64 << 20)
    >>> buf.put(exchange); buf.drain()
"""

from __future__ import annotations

import threading
from collections import deque

from collector.adapters.payloads import Exchange


class CaptureBuffer:
    def __init__(self, max_items: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.max_items = int(max_items)
        self.max_bytes = int(max_bytes)
        self._items: deque[Exchange] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.accepted_total = 0
        self.dropped_total = 0
        self.peak_bytes = 0

    @staticmethod
    def size_of(ex: Exchange) -> int:
        return len(ex.request_body) + len(ex.response_body) + 256

    def put(self, ex: Exchange) -> bool:
        size = self.size_of(ex)
        with self._lock:
            if len(self._items) >= self.max_items or self._bytes + size > self.max_bytes:
                self.dropped_total += 1
                return False
            self._items.append(ex)
            self._bytes += size
            self.accepted_total += 1
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            return True

    def drain(self) -> list[Exchange]:
        with self._lock:
            out = list(self._items)
            self._items.clear()
            self._bytes = 0
        return out

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes
