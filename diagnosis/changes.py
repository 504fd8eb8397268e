"""Deploys and restarts as evidence, from the sidecar's series through the one derivation in detectors.changes.

The sidecar exports what serves each model: ``model_up{version}`` and ``model_process_id``. Each cycle the
service reads the latest of both (:func:`observe_runtime`), compares with the previous look
(:func:`detectors.changes.runtime_changes`) and turns each change into change evidence
(:func:`change_evidence`), unless incidentd made it itself (its own rollbacks and restarts are recorded by
remediation when it runs them).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detectors.changes import RuntimeChange, RuntimeChangeKind, RuntimeObservation
from diagnosis.signals import SourceLike
from diagnosis.types import ChangeKind, Evidence, EvidenceKind, new_id

PROCESS_METRIC = "model_process_id"
OURS_WITHIN_SECONDS = 120.0   # a change observed this long after incidentd made the same one is that one


def _latest(series: list[Any], want_up: bool) -> tuple[float, Any] | None:
    latest: tuple[float, Any] | None = None
    for s in series:
        if not s.timestamps or (want_up and s.values[-1] < 1):
            continue
        if latest is None or s.timestamps[-1] > latest[0]:
            latest = (s.timestamps[-1], s)
    return latest


def observe_runtime(source: SourceLike, model: str, start: float, end: float, step: float) -> RuntimeObservation:
    """The version a model serves (from ``model_up``'s version label while up) and its process id."""
    version = None
    up = _latest(source.read("model_up", {"model": model}, start, end, step), want_up=True)
    if up is not None:
        version = up[1].label("version") or None
    instance = None
    proc = _latest(source.read(PROCESS_METRIC, {"model": model}, start, end, step), want_up=False)
    if proc is not None:
        instance = str(int(proc[1].values[-1]))
    return RuntimeObservation(version, instance)


def _ours(change: RuntimeChange, recent: Sequence[Evidence], now: float) -> bool:
    """Whether incidentd made this change itself (a rollback to this version, a restart just before)."""
    for e in recent:
        if e.kind is not EvidenceKind.CHANGE or e.attributes.get("by") != "incidentd" \
                or now - e.at > OURS_WITHIN_SECONDS:
            continue
        if change.kind is RuntimeChangeKind.VERSION and e.name == ChangeKind.ROLLBACK.value \
                and e.attributes.get("to") == change.current:
            return True
        # The pid incidentd saw (its child's) need not be the one /healthz reports (a wrapper shell, a
        # container runtime): a restart incidentd made just before is this one.
        if change.kind is RuntimeChangeKind.PROCESS and e.name == ChangeKind.RESTART.value:
            return True
    return False


def change_evidence(model: str, change: RuntimeChange, now: float, recent: Sequence[Evidence]) -> Evidence | None:
    """The evidence for a change incidentd observed but did not make; None for its own (already recorded).

    ``recent`` is the model's recent change evidence. Another version is a deploy; another process a restart.
    """
    if _ours(change, recent, now):
        return None
    if change.kind is RuntimeChangeKind.VERSION:
        return Evidence(new_id("chg"), EvidenceKind.CHANGE, model, ChangeKind.DEPLOY.value, now,
                        f"{model} switched from {change.previous} to {change.current}",
                        attributes={"from": change.previous, "to": change.current, "by": "observed"})
    return Evidence(new_id("chg"), EvidenceKind.CHANGE, model, ChangeKind.RESTART.value, now,
                    f"{model} restarted (process {change.previous} -> {change.current})",
                    attributes={"previous_pid": change.previous, "pid": change.current, "by": "observed"})
