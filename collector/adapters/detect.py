"""``--server-kind auto``: recognise the server kind from the names in its exposition.

    >>> choose_kind(parse_families(text), builtin_maps())
    Detection(kind='triton', matched=('nv_inference_request_success',), candidates=('triton',))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from collector.adapters.spec import MapError, MetricMap


@dataclass(frozen=True, slots=True)
class Detection:
    kind: str
    matched: tuple[str, ...]  # the detect names found
    candidates: tuple[str, ...]  # every kind with at least one match, best first


def _names(families: Iterable[Metric]) -> set[str]:
    out: set[str] = set()
    for fam in families:
        out.add(fam.name)
        out.update(s.name for s in fam.samples)
    return out


def _matches(pattern: str, names: set[str]) -> list[str]:
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return sorted(n for n in names if n.startswith(prefix))[:1]
    return [pattern] if pattern in names else []


def choose_kind(families: Iterable[Metric], maps: dict[str, MetricMap]) -> Detection:
    """The kind whose detect names match most (ties: higher priority); MapError when none matches."""
    names = _names(families)
    scored: list[tuple[int, int, str, tuple[str, ...]]] = []
    for kind, m in maps.items():
        hits = tuple(h for p in m.detect.any for h in _matches(p, names))
        if hits:
            scored.append((len(hits), m.detect.priority, kind, hits))
    if not scored:
        raise MapError(
            "no metric map recognises this exposition (known kinds: " + ", ".join(sorted(maps)) + "); "
            "pass --server-kind or add a map"
        )
    scored.sort(key=lambda t: (-t[1], -t[0], t[2]))
    best = scored[0]
    return Detection(kind=best[2], matched=best[3], candidates=tuple(t[2] for t in scored))
