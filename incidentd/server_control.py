"""Builds the executor and admin adapter for a third-party model server from ``remediation.executor``.

    >>> built = server_control(settings.remediation.executor, store)
    >>> built.admin.versions()     # {"current": ..., "known_good": ..., "known_good_since": ...}
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from incidentd.config import ExecutorSettings
from incidentd.store import Store
from remediation.executors_servers import KeyValue, KnownGoodTracker, ServerControl, ServerControlAdmin
from remediation.types import ActionKind, ActionStatus

THIRD_PARTY = ("mlserver", "triton", "torchserve", "kserve")


@dataclass(frozen=True, slots=True)
class ServerControlBuilt:
    executor: ServerControl
    tracker: KnownGoodTracker
    admin: ServerControlAdmin


def executor_for(ex: ExecutorSettings) -> ServerControl:
    """The executor ``ex.kind`` names (one of THIRD_PARTY)."""
    if ex.kind == "mlserver":
        from remediation.executors_oip import MLServerRepository

        return MLServerRepository(ex.url or "", ex.model or "", repository_dir=ex.repository_dir,
                                  ready_timeout=ex.ready_timeout_seconds, headers=ex.headers)
    if ex.kind == "triton":
        from remediation.executors_oip import TritonRepository

        return TritonRepository(ex.url or "", ex.model or "", ready_timeout=ex.ready_timeout_seconds,
                                headers=ex.headers)
    if ex.kind == "torchserve":
        from remediation.executors_torchserve import TorchServeManagement

        return TorchServeManagement(ex.url or "", ex.model or "", ready_timeout=ex.ready_timeout_seconds,
                                    headers=ex.headers)
    if ex.kind == "kserve":
        from remediation.executors_kserve import KServeInferenceService

        return KServeInferenceService(ex.namespace or "", ex.inferenceservice or "",
                                      rollout_timeout=ex.rollout_timeout_seconds,
                                      max_unavailable=ex.max_unavailable)
    raise ValueError(f"executor kind {ex.kind!r} is not a third-party model server ({', '.join(THIRD_PARTY)})")


def server_control(ex: ExecutorSettings, kv: KeyValue, active: Callable[[], Iterable[str]] = lambda: (),
                   executor: ServerControl | None = None,
                   clock: Callable[[], float] = time.time) -> ServerControlBuilt:
    executor = executor if executor is not None else executor_for(ex)
    tracker = KnownGoodTracker(kv, ex.kind, executor.model, promote_after=ex.promote_after_seconds, clock=clock)
    if ex.known_good and tracker.get() is None:
        tracker.mark(ex.known_good, "configured (remediation.executor.known_good)")
    verified = (lambda model, since: _verified(kv, model, since)) if isinstance(kv, Store) else None
    admin = (ServerControlAdmin(executor, tracker, active, verified) if verified is not None
             else ServerControlAdmin(executor, tracker, active))
    return ServerControlBuilt(executor, tracker, admin)


def _verified(store: Store, model: str, since: float) -> str | None:
    """The id of a restart or rollback on ``model`` verified at or after ``since``, if any."""
    for rec in store.actions(model=model, statuses=(ActionStatus.VERIFIED,)):
        if (rec.kind in (ActionKind.ROLLBACK, ActionKind.RESTART)
                and rec.verified_at is not None and rec.verified_at >= since):
            return rec.id
    return None
