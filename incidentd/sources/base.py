"""The Source interface: raw samples of series selected by metric name and exact label matchers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    labels: tuple[tuple[str, str], ...]
    timestamps: tuple[float, ...]
    values: tuple[float, ...]

    def label(self, key: str, default: str = "") -> str:
        return dict(self.labels).get(key, default)


class Source(Protocol):
    def read(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
             step: float) -> list[Series]:
        """Samples of every series of ``metric`` whose labels include ``matchers``, in [start, end].

        ``step`` is the resolution the caller needs; the embedded store returns raw samples,
        Prometheus evaluates ``query_range`` at that step. Raises ``SourceUnavailable``.
        """
        ...

    def read_by_model(self, metric: str, matchers: dict[str, str] | None, start: float, end: float,
                      step: float) -> dict[str, list[Series]]:
        """Every model's series of ``metric`` at once (one query, not one per model), keyed by the
        ``model`` label; series without one are left out. Raises ``SourceUnavailable``."""
        ...
