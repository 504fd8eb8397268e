"""Synthetic traffic for the demo: predict requests from the digits holdout, delayed labels, drift switches.

    >>> d = TrafficDriver("http://127.0.0.1:8081", rate_per_second=20, label_delay_seconds=5, seed=0)
    >>> d.start()
    >>> d.set_drift(0.5, features=[10, 11, 12], scale=1.0, shift=8.0)   # covariate shift on half the rows
    >>> d.stats()
    >>> d.stop()

The same traffic reaches a third-party server speaking the Open Inference Protocol (``protocol="oip"``:
``POST /v2/models/{model}/infer`` with a request ``id``) or TorchServe's (``protocol="v1"``:
``POST /predictions/{model}`` with ``{"instances": ...}`` and an ``X-Request-Id``), labels to the sidecar's
``/feedback`` keyed by the row ids the sidecar gives a request (the id itself, or ``id/i`` for row i).
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

import numpy as np

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Covariate shift applied to a fraction of rows: ``x[f] = x[f] * scale + shift`` for f in features."""

    fraction: float = 0.0
    features: tuple[int, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    codes: tuple[int, int] | None = None   # instead: integer codes drawn from [low, high] (unseen categories)


@dataclass(frozen=True, slots=True)
class TrafficStats:
    requests_sent: int
    requests_failed: int
    rows_sent: int
    labels_sent: int
    labels_failed: int
    labels_pending: int


class TrafficDriver:
    """Background thread sending /predict at a steady rate and /feedback after a delay; never crashes.

    Server errors, refused connections and timeouts are counted and the loop goes on (the server may be
    restarted underneath it).
    """

    def __init__(self, base_url: str, rate_per_second: float = 10.0, label_delay_seconds: float = 5.0,
                 batch_size: int = 1, seed: int = 0, label_fraction: float = 1.0,
                 timeout_seconds: float = 2.0, protocol: Literal["demo", "oip", "v1"] = "demo", model: str = "digits",
                 feedback_url: str | None = None) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be > 0")
        if not 1 <= batch_size <= 256:
            raise ValueError("batch_size must be in 1..256")
        if not 0.0 <= label_fraction <= 1.0:
            raise ValueError("label_fraction must be in [0, 1]")
        if protocol != "demo" and not feedback_url:
            raise ValueError(f"protocol {protocol!r} needs feedback_url (the sidecar's /feedback)")
        from incidentd.model_server.model import load_digits_split

        split = load_digits_split()
        self.base_url = base_url.rstrip("/")
        self.rate_per_second = float(rate_per_second)
        self.label_delay_seconds = float(label_delay_seconds)
        self.batch_size = batch_size
        self.label_fraction = label_fraction
        self.timeout_seconds = timeout_seconds
        self.protocol = protocol
        self.model = model
        self.feedback_url = feedback_url or f"{self.base_url}/feedback"
        self._x = split.x_holdout
        self._y = split.y_holdout
        self._rng = np.random.default_rng(seed)
        self._drift = DriftConfig()
        self._label_stall = False
        self._concept = (0.0, 0)
        self._nulls = 0.0
        self._classes = int(self._y.max()) + 1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[float, str, int]] = []   # (due time, request id, label) heap
        self._sent = self._failed = self._rows = self._labels = self._labels_failed = 0

    # --- switches ------------------------------------------------------------------------------------
    def set_drift(self, fraction: float, features: Sequence[int] = (), scale: float = 1.0,
                  shift: float = 0.0) -> None:
        """Shift ``features`` of a ``fraction`` of rows; ``set_drift(0)`` turns it off."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        bad = [f for f in features if not 0 <= f < self._x.shape[1]]
        if bad:
            raise ValueError(f"feature indices out of range: {bad}")
        with self._lock:
            self._drift = DriftConfig(fraction, tuple(int(f) for f in features), float(scale), float(shift))

    def set_unseen_codes(self, fraction: float, features: Sequence[int], low: int = 17, high: int = 64) -> None:
        """``features`` of a ``fraction`` of rows carry integer codes in [low, high], never seen in training."""
        self.set_drift(fraction, features)
        with self._lock:
            self._drift = DriftConfig(self._drift.fraction, self._drift.features, codes=(int(low), int(high)))

    def set_nulls(self, fraction: float) -> None:
        """A ``fraction`` of input values are sent as missing (``null`` in KServe v1 bodies)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        self._nulls = float(fraction)

    def set_concept_drift(self, fraction: float, shift: int = 1) -> None:
        """Labels of a ``fraction`` of rows become ``(y + shift) mod classes``: the world changed, not the
        inputs (what the demo server's concept_drift fault does to /feedback). ``set_concept_drift(0)`` ends it."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        with self._lock:
            self._concept = (float(fraction), int(shift))

    def set_label_stall(self, stalled: bool) -> None:
        """While stalled, labels are held back (they are sent, late, once the stall ends)."""
        self._label_stall = bool(stalled)

    def stats(self) -> TrafficStats:
        with self._lock:
            return TrafficStats(self._sent, self._failed, self._rows, self._labels, self._labels_failed,
                                len(self._pending))

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="traffic-driver", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ------------------------------------------------------------------------------------
    def _batch(self) -> tuple[np.ndarray, np.ndarray]:
        idx = self._rng.integers(0, len(self._x), size=self.batch_size)
        x, y = self._x[idx].copy(), self._y[idx]
        d = self._drift
        if d.fraction > 0 and d.features:
            rows = self._rng.random(len(x)) < d.fraction
            cols = np.asarray(d.features, dtype=np.intp)
            if d.codes is not None:
                x[np.ix_(rows, cols)] = self._rng.integers(d.codes[0], d.codes[1] + 1, size=(int(rows.sum()), len(cols)))
            else:
                x[np.ix_(rows, cols)] = x[np.ix_(rows, cols)] * d.scale + d.shift
        if self._nulls > 0:
            x[self._rng.random(x.shape) < self._nulls] = np.nan
        return x, y

    def _run(self) -> None:
        import httpx

        interval = 1.0 / self.rate_per_second
        next_at = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_seconds) as client:
            while not self._stop.is_set():
                try:
                    self._send_predict(client)
                    self._send_due_labels(client)
                except Exception:  # the loop's boundary: count, log, keep going
                    log.exception("traffic driver iteration failed")
                    with self._lock:
                        self._failed += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -1.0:            # fell far behind (server stalled): do not burst to catch up
                    next_at = time.monotonic()
                    delay = 0.0
                self._stop.wait(max(delay, 0.0))

    def _send_predict(self, client: httpx.Client) -> None:
        import httpx

        x, y = self._batch()
        try:
            if self.protocol == "demo":
                r = client.post("/predict", json={"inputs": x.tolist()})
                ids = r.json().get("request_ids", []) if r.status_code == 200 else []
            else:
                from collector.adapters.payloads import row_ids

                rid = uuid.uuid4().hex
                if self.protocol == "oip":
                    r = client.post(f"/v2/models/{self.model}/infer", json={"id": rid, "inputs": [
                        {"name": "pixels", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
                else:
                    # TorchServe-style: /predictions/{model} with KServe v1 bodies, missing values as null,
                    # the request id in X-Request-Id (the proxy keeps it)
                    rows = [[None if v != v else v for v in row] for row in x.tolist()]
                    r = client.post(f"/predictions/{self.model}", json={"instances": rows},
                                    headers={"X-Request-Id": rid})
                ids = row_ids(rid, len(x))   # the ids the sidecar gives the rows: labels are joined on them
        except (httpx.HTTPError, ValueError):
            with self._lock:
                self._failed += 1
            return
        if r.status_code != 200:
            with self._lock:
                self._failed += 1
            return
        due = time.monotonic() + self.label_delay_seconds
        with self._lock:
            self._sent += 1
            self._rows += len(ids)
            fraction, shift = self._concept
            for rid, label in zip(ids, y.tolist(), strict=False):
                if fraction and self._rng.random() < fraction:
                    label = (label + shift) % self._classes
                if self._rng.random() < self.label_fraction:
                    heapq.heappush(self._pending, (due, rid, int(label)))

    def _send_due_labels(self, client: httpx.Client) -> None:
        import httpx

        if self._label_stall:
            return
        now = time.monotonic()
        with self._lock:
            due: list[tuple[float, str, int]] = []
            while self._pending and self._pending[0][0] <= now and len(due) < 500:
                due.append(heapq.heappop(self._pending))
        for _, rid, label in due:
            try:
                r = client.post(self.feedback_url, json={"request_id": rid, "label": label})
                ok = 200 <= r.status_code < 300
            except httpx.HTTPError:
                ok = False
            with self._lock:
                if ok:
                    self._labels += 1
                else:
                    self._labels_failed += 1
