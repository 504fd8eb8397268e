"""Executors: how actions reach what they change. Embedded mode: the model server's admin API and a
supervised local process."""
from __future__ import annotations

import json
import logging
import os
import select
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

    Output goes to ``log_path``; stop is SIGTERM to its process group, then SIGKILL after ``stop_timeout``.
    The child runs in its own session, so it outlives a service killed with SIGKILL. With ``pid_file`` the
    child's pid and command are recorded there, and ``start`` adopts a surviving child (alive, same command
    line, healthy) instead of starting a second server on the same port.

        >>> p = LocalProcess(["python", "-m", "incidentd.model_server"], "http://127.0.0.1:8080/healthz",
        ...                  "model-server.log", pid_file="model-server.pid")
        >>> pid = p.start()          # the child a killed service left running, or a new one
    """

    def __init__(self, command: list[str], health_url: str, log_path: Path | str,
                 env: dict[str, str] | None = None, stop_timeout: float = 5.0, start_timeout: float = 60.0,
                 pid_file: Path | str | None = None):
        if not command:
            raise ValueError("a supervised process needs a command")
        self.command = list(command)
        self.health_url = health_url
        self.log_path = Path(log_path).resolve()
        self.pid_file = Path(pid_file).resolve() if pid_file is not None else None
        self.env = {**os.environ, **(env or {})}
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None     # a child an earlier run of the service started (not ours to wait)
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        if self._adopted is not None and _alive(self._adopted):
            return self._adopted
        return None

    @property
    def adopted(self) -> bool:
        """The running child was started by an earlier run of the service, and adopted at start."""
        return self._proc is None and self.pid is not None

    def start(self) -> int:
        with self._lock:
            adopted = self._adopt()
            return adopted if adopted is not None else self._start()

    def _adopt(self) -> int | None:
        """The child recorded in the pid file, if it still runs this command and answers its health check."""
        recorded = self._read_pid_file()
        if recorded is None:
            return None
        pid, command = recorded
        if command != self.command or not _alive(pid) or _cmdline(pid) != self.command:
            return None    # gone, or the pid now names another program: nothing to adopt
        self._proc, self._adopted = None, pid
        try:
            self._wait_healthy()
        except ActionFailed as e:
            log.warning("the surviving %s (pid %d) is not healthy (%s); stopping it and starting anew",
                        self.command[0], pid, e)
            self._stop()
            return None
        log.warning("adopted %s (pid %d), left running by an earlier run of the service", self.command[0], pid)
        return pid

    def _read_pid_file(self) -> tuple[int, list[str]] | None:
        if self.pid_file is None:
            return None
        try:
            data = json.loads(self.pid_file.read_text())
            return int(data["pid"]), [str(a) for a in data["command"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable pid file %s: %s", self.pid_file, e)
            return None

    def _write_pid_file(self, pid: int) -> None:
        if self.pid_file is None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
        tmp.write_text(json.dumps({"pid": pid, "command": self.command}))
        os.replace(tmp, self.pid_file)   # atomic: a service killed mid-write leaves the old record or the new

    def _start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self._adopted = None
        self._proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True)
        out.close()
        self._write_pid_file(self._proc.pid)   # before the health wait: a kill during it must find the child
        self._wait_healthy()
        return self._proc.pid

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ActionFailed(f"{self.command[0]} exited with {self._proc.returncode} at start; "
                                   f"see {self.log_path}", retryable=True)
            if self._proc is None and self.pid is None:
                raise ActionFailed(f"{self.command[0]} (pid {self._adopted}) exited; see {self.log_path}",
                                   retryable=True)
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
            if self.pid_file is not None:
                self.pid_file.unlink(missing_ok=True)

    def _stop(self) -> None:
        if self._proc is None:
            if self._adopted is not None:
                _stop_group(self._adopted, self.stop_timeout)
                self._adopted = None
            return
        proc = self._proc
        if proc.poll() is not None:
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


def _alive(pid: int) -> bool:
    """The process exists, is ours to signal, and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False     # gone, or another user's: never one of our children
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True     # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to exit (a pidfd turns readable then); True when it did."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable) or not _alive(pid)
    finally:
        os.close(fd)


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL, to an adopted child's process group (it leads its own session)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_exit(pid, wait):
            return
