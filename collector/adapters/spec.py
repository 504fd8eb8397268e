"""Metric maps: how one kind of model server's own Prometheus metrics become incidentd's canonical signals.

A map is YAML, validated when it is loaded; an error names the file and the field that is wrong.

    >>> m = load_map(Path("collector/adapters/maps/triton.yaml"))
    >>> m.kind, m.signals[Signal.LATENCY].type
    ('triton', <SourceType.COUNTER_PAIR: 'counter_pair'>)
    >>> maps = builtin_maps()            # every shipped map, by kind
"""

from __future__ import annotations

import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detectors.errors import IncidentdError


class MapError(IncidentdError):
    """A metric map is malformed; the message names the file and the field."""


class Signal(StrEnum):
    """The canonical signals a map can fill (docs/sidecar.md lists what each becomes on /metrics)."""

    REQUESTS = "requests_total"
    ERRORS = "errors_total"
    LATENCY = "latency"
    QUEUE_LATENCY = "queue_latency"
    IN_FLIGHT = "in_flight"
    QUEUED = "queued"
    TIME_TO_FIRST_TOKEN = "time_to_first_token"
    INTER_TOKEN_LATENCY = "inter_token_latency"
    KV_CACHE_USAGE = "kv_cache_usage"
    PROCESS_CPU_SECONDS = "process_cpu_seconds_total"
    PROCESS_RESIDENT_MEMORY = "process_resident_memory_bytes"
    GPU_UTILIZATION = "gpu_utilization"
    GPU_MEMORY_USED = "gpu_memory_used_bytes"
    GPU_MEMORY_TOTAL = "gpu_memory_total_bytes"


class SourceType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    COUNTER_PAIR = "counter_pair"  # a running sum (e.g. of microseconds) and a running count -> mean per interval


class Unit(StrEnum):
    SECONDS = "seconds"
    MILLISECONDS = "milliseconds"
    MICROSECONDS = "microseconds"
    NANOSECONDS = "nanoseconds"
    RATIO = "ratio"
    PERCENT = "percent"
    BYTES = "bytes"
    MEGABYTES = "megabytes"
    COUNT = "count"


SCALE: dict[Unit, float] = {
    Unit.SECONDS: 1.0,
    Unit.MILLISECONDS: 1e-3,
    Unit.MICROSECONDS: 1e-6,
    Unit.NANOSECONDS: 1e-9,
    Unit.RATIO: 1.0,
    Unit.PERCENT: 0.01,
    Unit.BYTES: 1.0,
    Unit.MEGABYTES: 1024.0 * 1024.0,
    Unit.COUNT: 1.0,
}

# Which source types make sense for each signal.
ALLOWED: dict[Signal, frozenset[SourceType]] = {
    Signal.REQUESTS: frozenset({SourceType.COUNTER}),
    Signal.ERRORS: frozenset({SourceType.COUNTER}),
    Signal.LATENCY: frozenset({SourceType.HISTOGRAM, SourceType.SUMMARY, SourceType.COUNTER_PAIR}),
    Signal.QUEUE_LATENCY: frozenset({SourceType.HISTOGRAM, SourceType.SUMMARY, SourceType.COUNTER_PAIR}),
    Signal.TIME_TO_FIRST_TOKEN: frozenset({SourceType.HISTOGRAM, SourceType.SUMMARY}),
    Signal.INTER_TOKEN_LATENCY: frozenset({SourceType.HISTOGRAM, SourceType.SUMMARY}),
    Signal.IN_FLIGHT: frozenset({SourceType.GAUGE}),
    Signal.QUEUED: frozenset({SourceType.GAUGE}),
    Signal.KV_CACHE_USAGE: frozenset({SourceType.GAUGE}),
    Signal.PROCESS_CPU_SECONDS: frozenset({SourceType.COUNTER}),
    Signal.PROCESS_RESIDENT_MEMORY: frozenset({SourceType.GAUGE}),
    Signal.GPU_UTILIZATION: frozenset({SourceType.GAUGE}),
    Signal.GPU_MEMORY_USED: frozenset({SourceType.GAUGE}),
    Signal.GPU_MEMORY_TOTAL: frozenset({SourceType.GAUGE}),
}
TIMED = frozenset(
    {Signal.LATENCY, Signal.QUEUE_LATENCY, Signal.TIME_TO_FIRST_TOKEN, Signal.INTER_TOKEN_LATENCY}
)

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class SignalSource(BaseModel):
    """Where one canonical signal comes from.

    ``metric`` lists candidate names (renames across server versions): the first one present in the
    exposition is used, unless ``combine: sum`` adds all present ones (e.g. success + failure counters).
    Histogram/summary names are the family name (without ``_bucket``/``_sum``/``_count``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SourceType
    metric: tuple[str, ...] = Field(min_length=1)
    combine: str = "first"  # first | sum
    unit: Unit = Unit.COUNT
    count: tuple[str, ...] = ()  # counter_pair: the count counter(s), same rules as ``metric``
    where: dict[str, str] = Field(default_factory=dict)  # label -> regex (full match) the sample must have
    gpu_label: str | None = None  # gpu_* signals: the label naming the device

    @field_validator("metric", "count", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("metric", "count")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _METRIC_NAME.match(name):
                raise ValueError(f"{name!r} is not a Prometheus metric name")
        return v

    @field_validator("where")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for label, rx in v.items():
            if not _LABEL_NAME.match(label):
                raise ValueError(f"{label!r} is not a label name")
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"label {label!r}: bad regex {rx!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SignalSource:
        if self.combine not in ("first", "sum"):
            raise ValueError(f"combine must be 'first' or 'sum', not {self.combine!r}")
        if self.type is SourceType.COUNTER_PAIR and not self.count:
            raise ValueError("a counter_pair needs 'count' (the counter of observations)")
        if self.type is not SourceType.COUNTER_PAIR and self.count:
            raise ValueError("'count' is only for type counter_pair")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        return all(re.fullmatch(rx, labels.get(k, "")) is not None for k, rx in self.where.items())


class LabelMap(BaseModel):
    """Which server labels carry the model name and version (tried in order; missing -> defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: tuple[str, ...] = ()
    version: tuple[str, ...] = ()
    # version values that name no version (TorchServe labels requests to the default version "default"):
    # the version then comes from the payloads, as for a server whose metrics carry none
    unversioned: tuple[str, ...] = ()

    @field_validator("model", "version", "unversioned", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class Detect(BaseModel):
    """How ``--server-kind auto`` recognises this kind: metric names (prefixes end with ``*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    any: tuple[str, ...] = Field(min_length=1)
    priority: int = 0  # higher wins a tie (e.g. vLLM over the generic process metrics)


class MetricMap(BaseModel):
    """One server kind's map; see collector/adapters/maps/*.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    source: str = ""  # where the metric names were read (docs URL)
    metrics_port: int | None = None  # the server's default Prometheus port, for docs and hints
    metrics_path: str = "/metrics"
    labels: LabelMap = LabelMap()
    detect: Detect
    signals: dict[Signal, SignalSource]

    @model_validator(mode="after")
    def _types_fit(self) -> MetricMap:
        for sig, src in self.signals.items():
            if src.type not in ALLOWED[sig]:
                allowed = ", ".join(sorted(t.value for t in ALLOWED[sig]))
                raise ValueError(f"signals.{sig.value}.type: {src.type.value} does not fit (allowed: {allowed})")
            if sig in TIMED and src.unit not in (
                Unit.SECONDS,
                Unit.MILLISECONDS,
                Unit.MICROSECONDS,
                Unit.NANOSECONDS,
            ):
                raise ValueError(f"signals.{sig.value}.unit: a latency needs a time unit, not {src.unit.value}")
        return self

    def all_metric_names(self) -> set[str]:
        return {n for s in self.signals.values() for n in (*s.metric, *s.count)}


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_map(data: Any, origin: str) -> MetricMap:
    """Validate one map's parsed YAML; ``origin`` (a file name) prefixes every error."""
    if not isinstance(data, dict):
        raise MapError(f"{origin}: a metric map is a mapping, not {type(data).__name__}")
    try:
        return MetricMap.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _field_path(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MapError(f"{origin}: field {loc}: {msg}{more}") from None


def load_map(path: Path) -> MetricMap:
    """Load and validate one YAML map file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MapError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise MapError(f"{path}: not YAML: {exc}") from None
    return parse_map(data, str(path))


def builtin_maps() -> dict[str, MetricMap]:
    """The maps shipped in collector/adapters/maps/, by kind."""
    out: dict[str, MetricMap] = {}
    for entry in sorted(resources.files("collector.adapters").joinpath("maps").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as p:
                m = load_map(Path(p))
            if m.kind in out:
                raise MapError(f"{entry.name}: field kind: {m.kind!r} is defined twice")
            out[m.kind] = m
    return out


def load_maps(extra: list[Path] | None = None) -> dict[str, MetricMap]:
    """Built-in maps plus the user's (files or directories of *.yaml); a user map replaces a built-in kind."""
    maps = builtin_maps()
    for p in extra or []:
        files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            m = load_map(f)
            maps[m.kind] = m
    return maps
