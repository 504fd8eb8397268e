"""Change points in what a model server runs: a new version, a new process.

The one derivation of deploys and restarts. The sidecar feeds it what ``/healthz`` says after every scrape
(and exports the same facts as ``model_up{version}`` and ``model_process_id``); the service feeds it those
series. Both therefore see the same switches and restarts, including ones nobody in incidentd made.

    >>> runtime_changes(RuntimeObservation("v1", "100"), RuntimeObservation("v2", "100"))
    (RuntimeChange(kind=<RuntimeChangeKind.VERSION: 'version'>, previous='v1', current='v2'),)
    >>> runtime_changes(None, RuntimeObservation("v1", "100"))   # the first look is no change
    ()
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class RuntimeChangeKind(enum.StrEnum):
    VERSION = "version"    # another model version is served
    PROCESS = "process"    # another process serves (the server restarted)


@dataclass(frozen=True, slots=True)
class RuntimeObservation:
    """What serves a model at one look: its version and the identity of its process (None: not known)."""

    version: str | None
    instance: str | None


@dataclass(frozen=True, slots=True)
class RuntimeChange:
    kind: RuntimeChangeKind
    previous: str
    current: str


def runtime_changes(before: RuntimeObservation | None, after: RuntimeObservation) -> tuple[RuntimeChange, ...]:
    """The changes between two looks. An unknown value on either side is no change: missing is not new."""
    if before is None:
        return ()
    out: list[RuntimeChange] = []
    if before.instance is not None and after.instance is not None and before.instance != after.instance:
        out.append(RuntimeChange(RuntimeChangeKind.PROCESS, before.instance, after.instance))
    if before.version is not None and after.version is not None and before.version != after.version:
        out.append(RuntimeChange(RuntimeChangeKind.VERSION, before.version, after.version))
    return tuple(out)


def merge(before: RuntimeObservation | None, after: RuntimeObservation) -> RuntimeObservation:
    """The latest known values: an unknown field keeps what was known before."""
    if before is None:
        return after
    return RuntimeObservation(after.version if after.version is not None else before.version,
                              after.instance if after.instance is not None else before.instance)
