"""Executors: how actions reach what they change. Embedded mode: the model server's admin API and a
supervised local process."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from remediation.types import ActionFailed

log = logging.getLogger(__name__)


class ModelServerAdmin:
    """Client of the demo model server's admin API (docs/contracts.md)."""

    def __init__(self, base_url: str, timeout: float = 10.0, token: str | None = None):
        if not base_url or "*" in base_url:
            raise ValueError(f"model server URL must name one server, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # The model server's admin token (its --admin-token-file); sent as a bearer credential.
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        try:
            with httpx.Client(timeout=self.timeout) as c:
                r = c.request(method, self.base_url + path, json=json, headers=self._headers)
        except httpx.HTTPError as e:
            raise ActionFailed(f"{method} {path} on {self.base_url} failed: {e}", retryable=True) from e
        if r.status_code >= 500:
            raise ActionFailed(f"{method} {path} answered {r.status_code}: {r.text[:200]}", retryable=True)
        if r.status_code >= 400:
            raise ActionFailed(f"{method} {path} answered {r.status_code}: {r.text[:200]}", retryable=False)
        body = r.json()
        if not isinstance(body, dict):
            raise ActionFailed(f"{method} {path} answered {type(body).__name__}, not a JSON object")
        return body

    def versions(self) -> dict[str, Any]:
        return self._call("GET", "/admin/versions")

    def load(self, version: str) -> dict[str, Any]:
        return self._call("POST", "/admin/load", {"version": version})

    def clamp(self, dry_run: bool, **params: Any) -> dict[str, Any]:
        return self._call("POST", "/admin/clamp", {"dry_run": dry_run, **params})

    def weights(self) -> dict[str, Any]:
        return self._call("GET", "/admin/weights")

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")


class LocalProcess:
    """A supervised child process (the model server in embedded mode): start, stop, restart, health.

    Output goes to ``log_path``; stop is SIGTERM, then SIGKILL after ``stop_timeout``.
    """

    def __init__(self, command: list[str], health_url: str, log_path: Path | str,
                 env: dict[str, str] | None = None, stop_timeout: float = 5.0, start_timeout: float = 60.0):
        if not command:
            raise ValueError("a supervised process needs a command")
        self.command = list(command)
        self.health_url = health_url
        self.log_path = Path(log_path).resolve()
        self.env = {**os.environ, **(env or {})}
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self) -> int:
        with self._lock:
            return self._start()

    def _start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True)
        out.close()
        self._wait_healthy()
        return self._proc.pid

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ActionFailed(f"{self.command[0]} exited with {self._proc.returncode} at start; "
                                   f"see {self.log_path}", retryable=True)
            try:
                if httpx.get(self.health_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ActionFailed(f"{self.health_url} not healthy after {self.start_timeout}s", retryable=True)

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass

    def restart(self) -> tuple[int | None, int]:
        """Stop and start again; returns (old pid, new pid)."""
        with self._lock:
            old = self.pid
            self._stop()
            new = self._start()
            self.restarts += 1
            log.info("restarted %s: pid %s -> %s", self.command[0], old, new)
            return old, new
