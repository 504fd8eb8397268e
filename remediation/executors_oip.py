"""Roll back and restart one model on MLServer or Triton through the Open Inference Protocol's model
repository extension (``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load|unload``).

Restart unloads and loads that one model (never the whole server) and waits until it is ready again.

Rollback differs by server, because the servers differ in how a version is chosen:

- **Triton** (``--model-control-mode=explicit``): the load request carries the model's configuration with
  ``version_policy: {specific: {versions: [KNOWN_GOOD]}}``; Triton loads that version and unloads the
  versions the policy no longer names. The configuration is read from ``GET /v2/models/{name}/config``
  first, so nothing else in it changes.
- **MLServer**: its load request takes no version; it (re)loads every version found in the model
  repository, unloads the ones no longer there, and serves the newest (integer order, else string
  order). So rollback needs the repository directory (``repository_dir``): the ``model-settings.json``
  of every version newer than the known-good one is set aside (renamed ``model-settings.json.disabled``,
  never deleted), the known-good version's is put back if it was set aside, and one ``load`` makes
  MLServer load the known-good version and unload the bad one. Rolling back to the bad version again
  (the revert) is the same move the other way.

Both read the server back (``/v2/models/{name}/versions/{v}/ready``, the repository index) and fail when
what they read is not what they asked for. ``rollback_to(v)`` with ``v`` already serving is a no-op, and
``dry_run=True`` returns the requests without sending any.

References: the OIP model repository extension (kserve/open-inference-protocol, ``model_repository``),
Triton's docs/protocol/extension_model_repository.md and docs/user_guide/model_management.md, and
MLServer's ``mlserver/handlers/model_repository.py`` and ``mlserver/registry.py`` (default version).
"""
from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from functools import cmp_to_key
from pathlib import Path
from typing import Any

from remediation.executors_servers import HttpControl, Request, ServerOutcome, wait_for
from remediation.types import ActionFailed

log = logging.getLogger(__name__)

SETTINGS = "model-settings.json"
DISABLED = SETTINGS + ".disabled"


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not model or "*" in model or "/" in model or " " in model:
        raise ValueError(f"model must name exactly one model, got {model!r}")
    return model


def _newer(a: str, b: str) -> int:
    """MLServer's and Triton's order of versions: as integers when both are, else as strings."""
    try:
        return int(a) - int(b)
    except ValueError:
        return (a > b) - (a < b)


def newest(versions: list[str]) -> str | None:
    return max(versions, key=cmp_to_key(_newer)) if versions else None


class OIPRepository(HttpControl, ABC):
    """The model-repository calls MLServer and Triton share, for one model."""

    kind = "oip"
    server = "OIP server"

    def __init__(self, base_url: str, model: str, timeout: float = 60.0, ready_timeout: float = 60.0,
                 token: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(base_url, timeout=timeout, token=token, headers=headers)
        self.model = _check_model(model)
        self.ready_timeout = ready_timeout
        self.restarts = 0

    @property
    def target(self) -> str:
        return f"{self.kind} {self.base_url} model {self.model}"

    @property
    def pid(self) -> int | None:
        return None    # the repository API names no instance; a restart is one action record, run once

    @property
    def command(self) -> list[str]:
        return ["curl", "-X", "POST", f"{self.base_url}/v2/repository/models/{self.model}/unload", "&&",
                "curl", "-X", "POST", f"{self.base_url}/v2/repository/models/{self.model}/load"]

    def _path(self, verb: str) -> str:
        return f"/v2/repository/models/{self.model}/{verb}"

    def index(self) -> list[dict[str, Any]]:
        """The repository index entries of this model (all versions the server knows, any state)."""
        body = self.json("POST", "/v2/repository/index", json={})
        if not isinstance(body, list):
            raise ActionFailed(f"{self.server} repository index is not a list: {str(body)[:200]}")
        return [e for e in body if isinstance(e, dict) and e.get("name") == self.model]

    def version_ready(self, version: str) -> bool:
        r = self.request("GET", f"/v2/models/{self.model}/versions/{version}/ready", ok=(400, 404, 503))
        return r.status_code == 200

    def model_ready(self) -> bool:
        return self.request("GET", f"/v2/models/{self.model}/ready", ok=(400, 404, 503)).status_code == 200

    def ready_versions(self) -> list[str]:
        versions = {str(e["version"]) for e in self.index() if e.get("version") not in (None, "")}
        return sorted((v for v in versions if self.version_ready(v)), key=cmp_to_key(_newer))

    def current(self) -> str:
        """The version unversioned requests reach: the newest ready one."""
        v = newest(self.ready_versions())
        if v is None:
            raise ActionFailed(f"{self.target}: no version is ready", retryable=True)
        return v

    def _load_body(self) -> dict[str, Any] | None:
        return None

    def restart_model(self, dry_run: bool = False) -> ServerOutcome:
        before = self.current()
        body = self._load_body()
        reqs = (Request("POST", self.base_url + self._path("unload"), {}),
                Request("POST", self.base_url + self._path("load"), body or {}))
        if dry_run:
            return ServerOutcome("restart", False, before, before, dry_run=True, requests=reqs)
        for r in reqs:
            self.request(r.method, r.url[len(self.base_url):], json=r.body)
        wait_for(self.model_ready, f"{self.target} ready after reload", self.ready_timeout)
        after = self.current()
        if after != before:
            raise ActionFailed(f"{self.target}: reloaded but version {after} serves, not {before}")
        self.restarts += 1
        log.warning("reloaded %s (version %s)", self.target, after)
        return ServerOutcome("restart", False, before, after, requests=reqs)

    def restart(self) -> tuple[int | None, int]:
        n = self.restarts
        self.restart_model()
        return n, self.restarts

    def rollback(self, to: str) -> tuple[str, str]:
        out = self.rollback_to(to)
        return out.before, out.after

    @abstractmethod
    def rollback_to(self, to: str, dry_run: bool = False) -> ServerOutcome:
        """Serve ``to`` instead of the current version; each server's repository does it its own way."""


class TritonRepository(OIPRepository):
    """Triton in explicit model-control mode: rollback loads the model with a version policy naming the
    known-good version; restart unloads and loads it with its current configuration."""

    kind = "triton"
    server = "Triton"

    def config(self) -> dict[str, Any]:
        cfg = self.json("GET", f"/v2/models/{self.model}/config")
        if not isinstance(cfg, dict):
            raise ActionFailed(f"Triton config of {self.model} is not an object: {str(cfg)[:200]}")
        return cfg

    def ready_versions(self) -> list[str]:
        """Versions from the repository index and from the model's metadata (a model loaded with its files
        in the load request, as PyTriton does, is not in the index), keeping the ready ones."""
        meta = self.request("GET", f"/v2/models/{self.model}", ok=(400, 404))
        listed = meta.json().get("versions", []) if meta.status_code == 200 else []
        versions = {str(e["version"]) for e in self.index() if e.get("version") not in (None, "")}
        versions |= {str(v) for v in listed or []}
        return sorted((v for v in versions if self.version_ready(v)), key=cmp_to_key(_newer))

    def _in_repository(self, what: str) -> None:
        """Refuse to unload or load a model that Triton cannot (re)load from its repository."""
        if not self.index():
            raise ActionFailed(f"{what} of {self.target} refused: {self.model} is not in Triton's model repository "
                               "(the repository index does not list it; it was loaded with its files in the "
                               "request, as PyTriton does), so Triton could not load it again", retryable=False)

    def _load_body(self) -> dict[str, Any] | None:
        self._in_repository("reload")
        return {"parameters": {"config": json.dumps(self.config())}}

    def rollback_to(self, to: str, dry_run: bool = False) -> ServerOutcome:
        before = self.current()
        if before == to and self.ready_versions() == [to]:
            return ServerOutcome("rollback", True, before, before, dry_run=dry_run,
                                 reason=f"{self.model} already serves version {to} alone")
        try:
            int(to)
        except ValueError:
            raise ActionFailed(f"Triton versions are integers; cannot load version {to!r}") from None
        self._in_repository("rollback")
        cfg = self.config()
        cfg["version_policy"] = {"specific": {"versions": [int(to)]}}
        req = Request("POST", self.base_url + self._path("load"), {"parameters": {"config": json.dumps(cfg)}})
        if dry_run:
            return ServerOutcome("rollback", False, before, to, dry_run=True, requests=(req,))
        self.request("POST", self._path("load"), json=req.body)
        wait_for(lambda: self.version_ready(to), f"{self.target} version {to} ready", self.ready_timeout)
        after = self.current()
        if after != to:
            raise ActionFailed(f"{self.target}: loaded version {to} but {after} serves")
        log.warning("rolled %s back: %s -> %s", self.target, before, after)
        return ServerOutcome("rollback", False, before, after, requests=(req,))


class MLServerRepository(OIPRepository):
    """MLServer: rollback sets aside the settings of versions newer than the known-good one in the model
    repository (``repository_dir``) and reloads the model; restart unloads and loads it."""

    kind = "mlserver"
    server = "MLServer"

    def __init__(self, base_url: str, model: str, repository_dir: str | Path | None = None, **kw: Any):
        super().__init__(base_url, model, **kw)
        self.repository_dir = Path(repository_dir).resolve() if repository_dir else None

    def on_disk(self) -> dict[str, tuple[Path, bool]]:
        """version -> (its settings file, enabled) for this model in the repository directory."""
        if self.repository_dir is None:
            raise ActionFailed(f"MLServer serves the newest loaded version of {self.model} and its load request "
                               "takes no version: rollback needs remediation.executor.repository_dir",
                               retryable=False)
        if not self.repository_dir.is_dir():
            raise ActionFailed(f"model repository {self.repository_dir} is not a directory", retryable=False)
        out: dict[str, tuple[Path, bool]] = {}
        for name in (SETTINGS, DISABLED):
            for p in self.repository_dir.rglob(name):
                try:
                    d = json.loads(p.read_text())
                except (OSError, ValueError) as e:
                    raise ActionFailed(f"{p} is not readable JSON: {e}", retryable=False) from e
                if d.get("name", p.parent.name) != self.model:
                    continue
                v = str((d.get("parameters") or {}).get("version") or "")
                if not v:
                    continue
                if v in out and out[v][1]:
                    continue
                out[v] = (p, name == SETTINGS)
        return out

    def _moves(self, to: str) -> list[tuple[Path, Path]]:
        disk = self.on_disk()
        if to not in disk:
            raise ActionFailed(f"version {to} of {self.model} is not in the model repository "
                               f"{self.repository_dir} (versions there: {sorted(disk)})", retryable=False)
        moves = []
        path, enabled = disk[to]
        if not enabled:
            moves.append((path, path.with_name(SETTINGS)))
        for v, (p, en) in disk.items():
            if en and _newer(v, to) > 0:
                moves.append((p, p.with_name(DISABLED)))
        return moves

    def rollback_to(self, to: str, dry_run: bool = False) -> ServerOutcome:
        before = self.current()
        moves = self._moves(to) if (before != to or self.repository_dir is not None) else []
        if before == to and not moves:
            return ServerOutcome("rollback", True, before, before, dry_run=dry_run,
                                 reason=f"{self.model} already serves version {to}")
        req = Request("POST", self.base_url + self._path("load"), {})
        files = tuple(Request("RENAME", f"file://{a}", str(b)) for a, b in moves)
        if dry_run:
            return ServerOutcome("rollback", False, before, to, dry_run=True, requests=(*files, req))
        for a, b in moves:
            a.rename(b)
        try:
            self.request("POST", self._path("load"), json={})
        except ActionFailed:
            for a, b in reversed(moves):      # leave the repository as it was
                b.rename(a)
            raise
        wait_for(lambda: self.version_ready(to), f"{self.target} version {to} ready", self.ready_timeout)
        after = self.current()
        if after != to:
            raise ActionFailed(f"{self.target}: reloaded for version {to} but {after} serves")
        log.warning("rolled %s back: %s -> %s", self.target, before, after)
        return ServerOutcome("rollback", False, before, after, requests=(*files, req))
