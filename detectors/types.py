"""Plain value types shared by every layer above the detectors."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class Direction(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    BOTH = "both"


class DetectorState(enum.StrEnum):
    WARMUP = "warmup"          # not enough data yet to judge
    NORMAL = "normal"
    ANOMALOUS = "anomalous"
    INVALID_INPUT = "invalid_input"  # last input was NaN/inf or out of order; reported, never raised


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of one series; a series is its name plus labels, as in Prometheus."""

    name: str
    labels: tuple[tuple[str, str], ...]
    timestamp: float
    value: float

    @property
    def series_key(self) -> str:
        return series_key(self.name, dict(self.labels))


def series_key(name: str, labels: dict[str, str]) -> str:
    """Canonical Prometheus-style identity: name{k="v",...} with sorted labels."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


@dataclass(frozen=True, slots=True)
class Reference:
    """A version's reference set for drift tests: inputs (n x d), the model's predictions on them (n,),
    and the feature names (d). The one type for it: the registry stores it, the sidecar fetches it.

        >>> Reference("v1", np.zeros((2, 3)), np.array([0, 1]), ("a", "b", "c")).version
        'v1'
    """

    version: str
    inputs: np.ndarray
    predictions: np.ndarray
    feature_names: tuple[str, ...] = ()
