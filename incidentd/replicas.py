"""Several ``incidentd serve`` on one PostgreSQL: each model owned by one replica through database leases.

Every detection cycle a replica lists the live replicas (heartbeat within the lease time) and wants the
models that rendezvous hashing (highest random weight) gives it among them; it releases leases on models
it no longer wants and takes the ones it wants. Between cycles it heartbeats and renews the leases it
holds every third of a lease (``renew``), so a lease can be as short as one detection interval (the
default) without a live replica ever losing one to a slow cycle. A killed replica stops renewing: its
heartbeat and leases are stale one lease later, and the survivor its models hash to takes them in its
first cycle after that, which is its first or second cycle after the death.

Actions: before one runs, the replica checks it still holds the model's lease and claims the action
row atomically (``claimed_by`` set once), so no action runs twice. When a replica takes over a model,
actions of that model left ``executing`` by another replica are orphans: they are reconciled (verified
rather than re-run); ones nobody claimed yet (approved through another replica's API) are run here.

    >>> reps = Replicas(repo, "a", lease_seconds=15.0)         # doctest: +SKIP
    >>> reps.assign(["m1", "m2"], now)                          # doctest: +SKIP
    ['m1', 'm2']
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from incidentd.storage import Repository
from remediation.types import ActionRecord, ActionStatus

log = logging.getLogger(__name__)


def default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _weight(replica: str, model: str) -> bytes:
    return hashlib.sha1(f"{replica}\x00{model}".encode()).digest()


def preferred(model: str, live: list[str]) -> str:
    """The live replica that rendezvous hashing assigns ``model`` to."""
    return max(live, key=lambda r: _weight(r, model))


class Replicas:
    """This replica's view of model ownership; ``assign`` once per cycle."""

    def __init__(self, store: Repository, replica_id: str, lease_seconds: float,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.id = replica_id
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.owned: set[str] = set()
        self.live: list[str] = [replica_id]
        self.cycles = 0
        # assign (the detection job) and renew (its own job) both write the leases: one at a time, so a
        # renewal never takes back a lease assign has just handed over
        self._lock = threading.Lock()

    @property
    def renew_every(self) -> float:
        """How often ``renew`` runs: three renewals per lease leave two for a late one."""
        return self.lease_seconds / 3

    def renew(self, now: float) -> None:
        """Between cycles: heartbeat and renew the leases held (a lease lost meanwhile stays lost)."""
        with self._lock:
            self.store.heartbeat(self.id, now)
            if self.owned:
                self.owned = self.store.claim(self.id, sorted(self.owned), now, self.lease_seconds)
            log.debug("replica %s renewed: owns %d models", self.id, len(self.owned),
                      extra={"replica": self.id, "renewed_at": now, "owned": sorted(self.owned)})

    def assign(self, models: list[str], now: float) -> list[str]:
        """The models this replica works on this cycle (leases taken or renewed in the database)."""
        with self._lock:
            return self._assign(models, now)

    def _assign(self, models: list[str], now: float) -> list[str]:
        self.store.heartbeat(self.id, now)
        live = self.store.live_replicas(now, self.lease_seconds)
        if self.id not in live:
            live.append(self.id)
        self.live = live
        wanted = [m for m in models if preferred(m, live) == self.id]
        extra = sorted(self.store.owned(self.id, now) - set(wanted))
        self.store.release(self.id, extra)               # hand over what hashes elsewhere now
        owned = self.store.claim(self.id, wanted, now, self.lease_seconds)
        acquired, lost = owned - self.owned, self.owned - owned
        if acquired or lost:
            log.info("replica %s owns %d models (+%d, -%d)", self.id, len(owned), len(acquired), len(lost))
        self.owned = owned
        self.cycles += 1
        log.debug("replica %s cycle %d: %d live, owns %d models", self.id, self.cycles, len(live), len(owned),
                  extra={"replica": self.id, "cycle": self.cycles, "at": now, "live": live, "owned": sorted(owned)})
        return sorted(owned)

    def in_flight_elsewhere(self) -> tuple[set[str], set[str]]:
        """Executing actions of the owned models: ones a replica that is no longer live claimed (orphans,
        to reconcile) and ones nobody claimed yet (approved through another replica's API, to run here)."""
        orphans, pending = set(), set()
        for action_id, _model, claimed_by in self.store.action_claims(sorted(self.owned),
                                                                      ActionStatus.EXECUTING.value):
            if claimed_by is None:
                pending.add(action_id)
            elif claimed_by != self.id and claimed_by not in self.live:
                orphans.add(action_id)
        return orphans, pending

    def may_execute(self, rec: ActionRecord) -> bool:
        """The guard before an action runs: this replica holds the model's lease and wins the action's claim."""
        if not self.store.holds(self.id, rec.model, self.clock()):
            log.info("action %s not run here: replica %s does not hold %s", rec.id, self.id, rec.model)
            return False
        if not self.store.claim_action(rec.id, self.id):
            log.info("action %s already claimed by another replica", rec.id)
            return False
        return True

    def leave(self) -> None:
        self.store.leave(self.id)
