"""The one streaming interface every univariate detector implements.

A detector is a small object: constructor arguments are its whole configuration,
learned state is private, set in ``reset()``, declared in ``state_keys`` and
checkpointable. No clocks, I/O or metrics inside a detector.

    >>> d = RobustZ(window=64)
    >>> for t, x in enumerate(values):
    ...     s = d.update(x, t)
    >>> d.score, d.state
"""
from __future__ import annotations

import copy
import enum
import math
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, ClassVar

import numpy as np

from detectors.types import DetectorState, Direction

REGISTRY: dict[str, type[Detector]] = {}
# enum members bound once: a class-attribute lookup such as DetectorState.NORMAL costs ~0.15 us, and
# _judge runs on every streamed point
_WARMUP, _NORMAL, _ANOMALOUS = DetectorState.WARMUP, DetectorState.NORMAL, DetectorState.ANOMALOUS


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its ``name`` (CLI, config, conformance suite)."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


class Detector(ABC):
    name: ClassVar[str]
    state_keys: ClassVar[tuple[str, ...]]
    # What the detector expects: "real" values, or "binary" 0/1 events (rates). The conformance suite uses it.
    input_kind: ClassVar[str] = "real"
    # Score at or above which the service treats a point as anomalous (scores are calibrated to [0, 1]).
    alarm_threshold: ClassVar[float] = 0.99

    def __init__(self) -> None:
        self.score: float = 0.0
        self.state: DetectorState = DetectorState.WARMUP
        self.direction: Direction = Direction.BOTH
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Forget everything learned; afterwards the detector equals a fresh instance."""

    @abstractmethod
    def update(self, value: float, timestamp: float | None = None) -> float:
        """Feed one point; return (and store in ``self.score``) its score in [0, 1]. Never raises on NaN."""

    def _invalid(self) -> float:
        """Record a NaN/inf (or non-numeric) point: score 0, state INVALID_INPUT, learned state untouched."""
        self.score = 0.0
        self.state = DetectorState.INVALID_INPUT
        return 0.0

    def _judge(self, score: float, warm: bool) -> float:
        """Store ``score`` and derive the state from it (WARMUP until ``warm``)."""
        self.score = score
        if not warm:
            self.state = _WARMUP
        elif score >= self.alarm_threshold:
            self.state = _ANOMALOUS
        else:
            self.state = _NORMAL
        return score

    # Constructor arguments stored under another attribute name. ``direction`` is the usual one: the
    # constructor's ``direction`` is the watched side, while ``self.direction`` reports the last deviation.
    _param_attrs: ClassVar[dict[str, str]] = {"direction": "watch"}

    def params(self) -> dict[str, Any]:
        """Constructor arguments: the detector's whole configuration."""
        out = {}
        for k in self._param_names():
            v = getattr(self, self._param_attrs.get(k, k))
            out[k] = v.value if isinstance(v, enum.Enum) else v
        return out

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        import inspect

        sig = inspect.signature(cls.__init__)
        return tuple(p for p in sig.parameters if p != "self")

    def clone(self) -> Detector:
        """A fresh, untrained detector with the same configuration."""
        return type(self)(**self.params())

    def checkpoint(self) -> dict[str, Any]:
        state = {k: copy.deepcopy(getattr(self, k)) for k in self.state_keys}
        return {"detector": self.name, "params": self.params(), "state": _to_jsonable(state),
                "score": self.score, "status": self.state.value, "direction": self.direction.value}

    @classmethod
    def restore(cls, checkpoint: dict[str, Any]) -> Detector:
        det_cls = REGISTRY[checkpoint["detector"]]
        det = det_cls(**checkpoint["params"])
        for k, v in checkpoint["state"].items():
            current = getattr(det, k)
            setattr(det, k, _from_jsonable(v, like=current))
        det.score = float(checkpoint.get("score", 0.0))
        det.state = DetectorState(checkpoint.get("status", DetectorState.WARMUP.value))
        det.direction = Direction(checkpoint.get("direction", Direction.BOTH.value))
        return det

    def score_batch(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Scores for a whole array, continuing from the current state; equal to calling update per point.

        Subclasses override this with a vectorized path; the default loops.
        """
        values = np.asarray(values, dtype=float)
        out = np.empty(len(values))
        for i, x in enumerate(values):
            out[i] = self.update(float(x), None if timestamps is None else float(timestamps[i]))
        return out


def finite_or_none(value: Any) -> float | None:
    """The point as a float, or None when it is not a finite number (detectors report it, never raise)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, deque)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _from_jsonable(obj: Any, like: Any = None) -> Any:
    if isinstance(obj, dict) and "__float__" in obj:
        return float(obj["__float__"])
    if isinstance(obj, dict) and "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if isinstance(obj, dict):
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list) and isinstance(like, deque):
        return deque((_from_jsonable(v) for v in obj), maxlen=like.maxlen)
    if isinstance(obj, list) and isinstance(like, tuple):
        return tuple(_from_jsonable(v) for v in obj)
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj
