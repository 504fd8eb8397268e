"""Server adapters: read a model server's own Prometheus metrics through a declarative map (YAML)."""

from collector.adapters.detect import Detection, choose_kind
from collector.adapters.engine import (
    QUANTILES,
    SERVER_WIDE,
    Histogram,
    ModelKey,
    ReadingWindow,
    ServerReading,
    extract,
    parse_families,
)
from collector.adapters.spec import MapError, MetricMap, Signal, builtin_maps, load_map, load_maps, parse_map

__all__ = [
    "QUANTILES",
    "SERVER_WIDE",
    "Detection",
    "Histogram",
    "MapError",
    "MetricMap",
    "ModelKey",
    "ReadingWindow",
    "ServerReading",
    "Signal",
    "builtin_maps",
    "choose_kind",
    "extract",
    "load_map",
    "load_maps",
    "parse_families",
    "parse_map",
]
