"""Restart a model server that systemd supervises, and the executor protocols the actions rely on.

``SystemdUnit`` restarts exactly one named service unit with ``systemctl restart UNIT``; it reads
``systemctl show`` before and after, refuses units that are not loaded, and is idempotent: when the
unit's MainPID (or InvocationID) already changed since the plan, a retried restart does nothing.

    >>> unit = SystemdUnit("model-server.service")              # scope="user" adds --user
    >>> planned = unit.status()                                 # snapshot for the plan
    >>> outcome = unit.restart_once(planned)                    # RestartOutcome(noop, before, after)
    >>> old_pid, new_pid = unit.restart()                       # the LocalProcess-compatible form

The protocols below are what actions need from an executor; ``remediation.executors.LocalProcess``
already satisfies ``RestartExecutor``. See docs/executors.md.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from remediation.types import ActionFailed

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the executor protocols


@runtime_checkable
class RestartExecutor(Protocol):
    """Something that can restart one serving instance (a process, a systemd unit, a Deployment).

    ``pid`` identifies the running instance (a PID, or a Deployment's generation): an action records it
    in its plan and does nothing when it has changed by the time it executes (someone restarted already).
    """

    @property
    def pid(self) -> int | None: ...

    @property
    def command(self) -> list[str]: ...        # what a person would run by hand, for plans and audit

    def restart(self) -> tuple[int | None, int]: ...


@runtime_checkable
class RollbackExecutor(Protocol):
    """Something that can put one serving instance back on a known-good release.

    ``rollback(to)`` returns ``(old, new)``; ``old == new == to`` means it was already there (no-op).
    """

    def current(self) -> str: ...

    def rollback(self, to: str) -> tuple[str, str]: ...


# ---------------------------------------------------------------- running systemctl


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], CommandResult]


def subprocess_runner(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run ``argv`` (argv[0] looked up on PATH, run by absolute path), no shell, C locale, no pager."""
    exe = shutil.which(argv[0])
    if exe is None:
        raise ActionFailed(f"{argv[0]} not found on PATH: this host cannot run systemd actions",
                           retryable=False)
    env = {**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "SYSTEMD_LESS": ""}
    try:
        p = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, env=env,
                           check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise ActionFailed(f"{' '.join(argv)} timed out after {timeout}s", retryable=True) from e
    return CommandResult(tuple(argv), p.returncode, p.stdout, p.stderr)


# ---------------------------------------------------------------- unit names and state

# systemd.unit(5): unit names are made of ASCII letters, digits, ":", "-", "_", ".", "\" (escapes) and "@"
# (template instances), at most 255 characters, and end in a type suffix. We only restart services,
# never globs, never templates without an instance, never anything that could be read as an option.
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]+)?\.service$")
SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "NRestarts", "InvocationID")


def validate_unit(unit: str) -> str:
    """Return the canonical ``NAME.service`` for one service unit; raise ValueError naming the problem."""
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError("unit must name one systemd service, got an empty name")
    if any(c in unit for c in "*?[]"):
        raise ValueError(f"unit {unit!r}: glob patterns are refused; name exactly one unit")
    if unit.startswith("-"):
        raise ValueError(f"unit {unit!r} must not start with '-'")
    if "." not in unit.rsplit("@", 1)[-1]:
        unit = unit + ".service"
    if len(unit) > 255:
        raise ValueError(f"unit name longer than 255 characters: {unit[:40]}...")
    if unit.endswith("@.service") or unit.startswith("@"):
        raise ValueError(f"unit {unit!r} is a template; name an instance (name@instance.service)")
    if not _UNIT_RE.match(unit):
        raise ValueError(f"unit {unit!r} is not a valid service unit name (letters, digits, ':-_.\\@', "
                         "ending in .service)")
    return unit


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """What ``systemctl show -p LoadState,ActiveState,SubState,MainPID,NRestarts,InvocationID`` says."""

    unit: str
    load_state: str
    active_state: str
    sub_state: str
    main_pid: int | None           # None when systemd reports 0 (not running)
    n_restarts: int | None         # automatic restarts by Restart=; a manual restart does not count
    invocation_id: str

    @property
    def running(self) -> bool:
        return self.active_state == "active" and (self.main_pid is not None or self.sub_state == "exited")


def parse_show(unit: str, text: str) -> UnitStatus:
    """Parse ``systemctl show`` output (KEY=VALUE lines, any order, unknown keys ignored)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    missing = [k for k in ("LoadState", "ActiveState", "MainPID") if k not in props]
    if missing:
        raise ActionFailed(f"systemctl show {unit}: missing {missing} in output {text[:200]!r}", retryable=True)
    try:
        pid = int(props["MainPID"])
    except ValueError as e:
        raise ActionFailed(f"systemctl show {unit}: MainPID {props['MainPID']!r} is not a number",
                           retryable=False) from e
    nr = props.get("NRestarts", "")
    return UnitStatus(unit=unit, load_state=props["LoadState"], active_state=props["ActiveState"],
                      sub_state=props.get("SubState", ""), main_pid=pid or None,
                      n_restarts=int(nr) if nr.isdigit() else None,
                      invocation_id=props.get("InvocationID", ""))


@dataclass(frozen=True, slots=True)
class RestartOutcome:
    noop: bool
    before: UnitStatus
    after: UnitStatus
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"noop": self.noop, "reason": self.reason, "unit": self.before.unit,
                "old_pid": self.before.main_pid, "new_pid": self.after.main_pid,
                "old_invocation": self.before.invocation_id, "new_invocation": self.after.invocation_id,
                "active_state": self.after.active_state, "n_restarts": self.after.n_restarts}


class SystemdUnit:
    """One systemd service that runs a model server. ``scope="user"`` talks to the user manager.

        >>> SystemdUnit("model-server").command
        ['systemctl', '--no-ask-password', 'restart', 'model-server.service']
    """

    def __init__(self, unit: str, scope: Literal["system", "user"] = "system", runner: Runner | None = None,
                 timeout: float = 90.0, settle_timeout: float = 30.0, poll_interval: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if scope not in ("system", "user"):
            raise ValueError(f"scope must be 'system' or 'user', got {scope!r}")
        self.unit = validate_unit(unit)
        self.scope = scope
        self.runner = runner or subprocess_runner
        self.timeout = timeout
        self.settle_timeout = settle_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._monotonic = monotonic

    # --- argv (exactly what runs) --------------------------------------------------------------------
    def _base(self) -> list[str]:
        return ["systemctl", "--user"] if self.scope == "user" else ["systemctl"]

    def show_argv(self) -> list[str]:
        return [*self._base(), "show", "-p", ",".join(SHOW_PROPERTIES), self.unit]

    def restart_argv(self) -> list[str]:
        return [*self._base(), "--no-ask-password", "restart", self.unit]

    @property
    def command(self) -> list[str]:
        return self.restart_argv()

    # --- reading ------------------------------------------------------------------------------------
    def status(self) -> UnitStatus:
        r = self.runner(self.show_argv(), self.timeout)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip()
            # "System has not been booted with systemd", "Failed to connect to bus": no manager to ask.
            raise ActionFailed(f"systemctl show {self.unit} failed ({r.returncode}): {msg}",
                               retryable="bus" in msg.lower() or "timed out" in msg.lower())
        return parse_show(self.unit, r.stdout)

    @property
    def pid(self) -> int | None:
        """The current MainPID (reads systemd); None when not running or when systemd cannot be asked."""
        try:
            return self.status().main_pid
        except ActionFailed as e:
            log.warning("cannot read MainPID of %s: %s", self.unit, e)
            return None

    # --- acting -------------------------------------------------------------------------------------
    def restart_once(self, planned: UnitStatus | None = None) -> RestartOutcome:
        """Restart unless the unit already changed since ``planned``; verify it came back active."""
        before = self.status()
        if before.load_state != "loaded":
            raise ActionFailed(f"unit {self.unit} is {before.load_state} (not loaded): refusing to restart",
                               retryable=False)
        if planned is not None and before.running and _changed(planned, before):
            log.info("%s already restarted since the plan (pid %s -> %s): no-op", self.unit,
                     planned.main_pid, before.main_pid)
            return RestartOutcome(True, before, before, "already restarted since the plan")
        r = self.runner(self.restart_argv(), self.timeout)
        if r.returncode != 0:
            raise ActionFailed(f"systemctl restart {self.unit} failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[:300]}", retryable=False)
        after = self._wait_restarted(before)
        log.warning("restarted %s: pid %s -> %s", self.unit, before.main_pid, after.main_pid)
        return RestartOutcome(False, before, after)

    def restart(self) -> tuple[int | None, int]:
        """Restart now; returns (old MainPID, new MainPID) like ``LocalProcess.restart``."""
        out = self.restart_once()
        return out.before.main_pid, int(out.after.main_pid or 0)

    def _wait_restarted(self, before: UnitStatus) -> UnitStatus:
        deadline = self._monotonic() + self.settle_timeout
        last = before
        while True:
            last = self.status()
            if last.active_state == "failed":
                raise ActionFailed(f"{self.unit} failed after restart ({last.sub_state})", retryable=False)
            if last.running and _changed(before, last):
                return last
            if self._monotonic() >= deadline:
                raise ActionFailed(f"{self.unit} not back after restart within {self.settle_timeout}s: "
                                   f"{last.active_state}/{last.sub_state}, MainPID {last.main_pid}",
                                   retryable=True)
            self._sleep(self.poll_interval)


def _changed(a: UnitStatus, b: UnitStatus) -> bool:
    """A new instance: the MainPID or the InvocationID (a fresh one per start) differs."""
    if a.invocation_id and b.invocation_id and a.invocation_id != b.invocation_id:
        return True
    return a.main_pid != b.main_pid
