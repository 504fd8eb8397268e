"""Roll back and restart one model on TorchServe through its management API (default port 8081).

- rollback = ``PUT /models/{name}/{known_good}/set-default``: unversioned requests
  (``/predictions/{name}``) go to the known-good version; the bad version stays registered (nothing is
  deleted), so the revert is set-default back.
- restart = scale the default version's workers to 0 and back:
  ``PUT /models/{name}/{version}?min_worker=0&max_worker=0&synchronous=true``, then the previous
  ``min_worker``/``max_worker`` with ``synchronous=true``; the model's worker processes are new ones
  (their pids change), the frontend and every other model keep running.

Both read the model back (``GET /models/{name}`` for the default version and its workers,
``GET /models/{name}/all`` for the registered versions) and fail when it is not what they asked for.
Rolling back to the version that is already the default is a no-op; ``dry_run=True`` sends nothing.
A refusal (an unknown version, a management API with token authorization) is raised as ActionFailed
with TorchServe's own message.

Reference: TorchServe docs/management_api.md (describe, set default version, scale workers).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from remediation.executors_servers import HttpControl, Request, ServerOutcome, wait_for
from remediation.types import ActionFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TorchServeModel:
    """One version of a model as ``GET /models/{name}[/{version}|/all]`` describes it."""

    version: str
    min_workers: int
    max_workers: int
    worker_pids: tuple[int, ...]
    ready_workers: int

    @classmethod
    def parse(cls, d: dict[str, Any]) -> TorchServeModel:
        workers = d.get("workers") or []
        return cls(str(d.get("modelVersion", "")), int(d.get("minWorkers", 0)), int(d.get("maxWorkers", 0)),
                   tuple(int(w["pid"]) for w in workers if w.get("pid") not in (None, -1)),
                   sum(1 for w in workers if w.get("status") == "READY"))


class TorchServeManagement(HttpControl):
    """One model on one TorchServe, through the management API at ``base_url`` (e.g. http://host:8081)."""

    kind = "torchserve"
    server = "TorchServe"

    def __init__(self, base_url: str, model: str, timeout: float = 120.0, ready_timeout: float = 120.0,
                 token: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(base_url, timeout=timeout, token=token, headers=headers)
        if not model or "*" in model or "/" in model or " " in model:
            raise ValueError(f"model must name exactly one model, got {model!r}")
        self.model = model
        self.ready_timeout = ready_timeout

    @property
    def target(self) -> str:
        return f"torchserve {self.base_url} model {self.model}"

    @property
    def command(self) -> list[str]:
        return ["curl", "-X", "PUT", f"{self.base_url}/models/{self.model}?min_worker=0&synchronous=true"]

    def describe(self, version: str | None = None) -> TorchServeModel:
        path = f"/models/{self.model}" + (f"/{version}" if version else "")
        body = self.json("GET", path)
        if not isinstance(body, list) or not body or not isinstance(body[0], dict):
            raise ActionFailed(f"TorchServe described {self.model} as {str(body)[:200]}")
        return TorchServeModel.parse(body[0])

    def versions(self) -> list[str]:
        body = self.json("GET", f"/models/{self.model}/all")
        return [str(d.get("modelVersion")) for d in body if isinstance(d, dict)] if isinstance(body, list) else []

    @property
    def pid(self) -> int | None:
        """The smallest worker pid of the default version: a restart replaces it."""
        try:
            pids = self.describe().worker_pids
        except ActionFailed as e:
            log.warning("cannot describe %s: %s", self.target, e)
            return None
        return min(pids) if pids else None

    def current(self) -> str:
        return self.describe().version

    def rollback(self, to: str) -> tuple[str, str]:
        out = self.rollback_to(to)
        return out.before, out.after

    def rollback_to(self, to: str, dry_run: bool = False) -> ServerOutcome:
        before = self.current()
        if before == to:
            return ServerOutcome("rollback", True, before, before, dry_run=dry_run,
                                 reason=f"{to} is already the default version of {self.model}")
        req = Request("PUT", f"{self.base_url}/models/{self.model}/{to}/set-default")
        if dry_run:
            known = self.versions()
            if to not in known:
                raise ActionFailed(f"TorchServe has no version {to} of {self.model} (registered: {known})")
            return ServerOutcome("rollback", False, before, to, dry_run=True, requests=(req,))
        self.request("PUT", f"/models/{self.model}/{to}/set-default")
        after = self.current()
        if after != to:
            raise ActionFailed(f"{self.target}: set-default {to} answered OK but the default is {after}")
        log.warning("rolled %s back: %s -> %s", self.target, before, after)
        return ServerOutcome("rollback", False, before, after, requests=(req,))

    def _scale(self, version: str, lo: int, hi: int) -> Request:
        return Request("PUT", f"{self.base_url}/models/{self.model}/{version}?min_worker={lo}&max_worker={hi}"
                              "&synchronous=true")

    def restart_model(self, dry_run: bool = False) -> ServerOutcome:
        m = self.describe()
        lo, hi = max(m.min_workers, 1), max(m.max_workers, m.min_workers, 1)
        reqs = (self._scale(m.version, 0, 0), self._scale(m.version, lo, hi))
        before = f"{m.version} workers {list(m.worker_pids)}"
        if dry_run:
            return ServerOutcome("restart", False, before, before, dry_run=True, requests=reqs)
        for lo_, hi_ in ((0, 0), (lo, hi)):
            self.request("PUT", f"/models/{self.model}/{m.version}",
                         params={"min_worker": lo_, "max_worker": hi_, "synchronous": "true"})
        wait_for(lambda: self.describe(m.version).ready_workers >= lo, f"{self.target} {lo} workers READY",
                 self.ready_timeout)
        a = self.describe(m.version)
        if set(a.worker_pids) & set(m.worker_pids):
            raise ActionFailed(f"{self.target}: workers {sorted(set(a.worker_pids) & set(m.worker_pids))} "
                               "survived the scale to 0")
        log.warning("restarted the workers of %s: %s -> %s", self.target, m.worker_pids, a.worker_pids)
        return ServerOutcome("restart", False, before, f"{a.version} workers {list(a.worker_pids)}", requests=reqs)

    def restart(self) -> tuple[int | None, int]:
        old = self.pid
        self.restart_model()
        new = self.pid
        if new is None:
            raise ActionFailed(f"{self.target}: no worker after the restart")
        return old, new
