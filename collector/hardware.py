"""Host and model-server process signals through psutil.

>>> host = HostSampler(); host.sample()            # doctest: +SKIP
HostReading(cpu_usage_ratio=0.12, memory_usage_ratio=0.41)
>>> proc = ProcessSampler(); proc.sample(pid=1234)  # None on the first call for a pid (no CPU delta yet)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DiskReading:
    """Free and total bytes of the filesystem holding ``path`` (where the model server writes)."""

    path: str
    free_bytes: float
    total_bytes: float


@dataclass(frozen=True, slots=True)
class HostReading:
    cpu_usage_ratio: float | None
    memory_usage_ratio: float | None
    disks: tuple[DiskReading, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessReading:
    pid: int
    alive: bool
    cpu_usage_ratio: float | None  # CPU seconds per second / logical CPUs: 0..1 of the whole host
    resident_memory_bytes: float | None
    # The most the RSS can reach now (issue 18): see memory_limit(); source "cgroup" or "host".
    memory_limit_bytes: float | None = None
    memory_limit_source: str | None = None


class HostSampler:
    """Host-wide CPU and memory usage ratios, and free space of the filesystems in ``disk_paths``."""

    def __init__(self, disk_paths: tuple[str, ...] = ()) -> None:
        self.disk_paths = tuple(disk_paths)
        psutil.cpu_percent(interval=None)  # prime: the first non-blocking call has no interval to measure

    def sample(self) -> HostReading:
        try:
            cpu = psutil.cpu_percent(interval=None) / 100.0
        except (OSError, RuntimeError):
            cpu = None
        try:
            mem = psutil.virtual_memory().percent / 100.0
        except (OSError, RuntimeError):
            mem = None
        return HostReading(cpu_usage_ratio=cpu, memory_usage_ratio=mem, disks=disk_readings(self.disk_paths))


def disk_readings(paths: tuple[str, ...]) -> tuple[DiskReading, ...]:
    """``psutil.disk_usage`` of each path; a path that cannot be read is left out (reported as missing)."""
    out = []
    for p in paths:
        try:
            u = psutil.disk_usage(p)
        except OSError as e:
            log.warning("disk usage of %s unreadable: %s", p, e)
            continue
        out.append(DiskReading(path=str(p), free_bytes=float(u.free), total_bytes=float(u.total)))
    return tuple(out)


# cgroup v1 reports "no limit" as a page-rounded 2**63 - 1; anything this large is no limit.
_UNLIMITED = 2**60


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    limit_bytes: float
    usage_bytes: float | None


def _cgroup_mounts(mountinfo: str) -> list[tuple[str, Path, int]]:
    """(root inside the hierarchy, mount point, version) of every memory-capable cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            out.append((fields[3], Path(fields[4]), 2))
        elif tail[0] == "cgroup" and len(tail) >= 3 and "memory" in tail[2].split(","):
            out.append((fields[3], Path(fields[4]), 1))
    return out


def _read_number(path: Path) -> float | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return None if v >= _UNLIMITED else v


def cgroup_memory(pid: int | str = "self", proc: Path = Path("/proc")) -> CgroupMemory | None:
    """The tightest memory limit of ``pid``'s cgroup and its ancestors (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), with the usage of the cgroup that sets it; None when unlimited or unreadable.

    The cgroup path comes from ``/proc/PID/cgroup`` and is mapped onto the mount point found in
    ``/proc/PID/mountinfo`` (a container sees its own cgroup as the mount's root).
    """
    try:
        groups = (proc / str(pid) / "cgroup").read_text().splitlines()
        mounts = _cgroup_mounts((proc / str(pid) / "mountinfo").read_text())
    except OSError:
        return None
    best: CgroupMemory | None = None
    for line in groups:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, cg_path = parts
        version = 2 if parts[0] == "0" and controllers == "" else 1
        if version == 1 and "memory" not in controllers.split(","):
            continue
        for root, mount, mv in mounts:
            if mv != version or not (cg_path == root or cg_path.startswith(root.rstrip("/") + "/")):
                continue
            rel = cg_path[len(root.rstrip("/")):].strip("/")
            here = mount / rel if rel else mount
            limit_file, usage_file = (("memory.max", "memory.current") if version == 2
                                      else ("memory.limit_in_bytes", "memory.usage_in_bytes"))
            d = here
            while True:
                limit = _read_number(d / limit_file)
                if limit is not None and (best is None or limit < best.limit_bytes):
                    best = CgroupMemory(limit, _read_number(d / usage_file))
                if d == mount or mount not in d.parents:
                    break
                d = d.parent
    return best


def memory_limit(pid: int, rss: float, proc: Path = Path("/proc")) -> tuple[float, str] | None:
    """The most the process's RSS can reach now: its cgroup's limit less what the rest of the cgroup
    uses, else its RSS plus the host's available memory. None when neither can be read."""
    cg = cgroup_memory(pid, proc)
    if cg is not None:
        others = max(0.0, (cg.usage_bytes or rss) - rss)
        return cg.limit_bytes - others, "cgroup"
    try:
        return rss + float(psutil.virtual_memory().available), "host"
    except (OSError, RuntimeError):
        return None


class ProcessSampler:
    """CPU and RSS of one process by pid; a new pid starts a new CPU baseline, a dead pid reads dead."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pid: int | None = None
        self._proc: psutil.Process | None = None
        self._last: tuple[float, float] | None = None  # (clock, cpu seconds)
        self._ncpu = psutil.cpu_count(logical=True) or 1

    def sample(self, pid: int | None) -> ProcessReading | None:
        """Read ``pid``; ``None`` without a pid or when it cannot be read (another container, no access)."""
        if pid is None:
            return None
        if pid != self._pid:
            self._pid, self._last = pid, None
            try:
                self._proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                self._proc = None
                return ProcessReading(pid=pid, alive=False, cpu_usage_ratio=None, resident_memory_bytes=None)
            except (psutil.AccessDenied, OSError):
                self._proc = None
                return None
        if self._proc is None:
            return ProcessReading(pid=pid, alive=False, cpu_usage_ratio=None, resident_memory_bytes=None)
        try:
            with self._proc.oneshot():
                times = self._proc.cpu_times()
                rss = float(self._proc.memory_info().rss)
                if not self._proc.is_running() or self._proc.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.NoSuchProcess(pid)
        except psutil.NoSuchProcess:
            self._proc = None
            return ProcessReading(pid=pid, alive=False, cpu_usage_ratio=None, resident_memory_bytes=None)
        except (psutil.AccessDenied, OSError):
            return None
        now, cpu_s = self._clock(), float(times.user + times.system)
        ratio = None
        if self._last is not None and now > self._last[0]:
            ratio = max(0.0, (cpu_s - self._last[1]) / (now - self._last[0]) / self._ncpu)
            ratio = min(ratio, 1.0)
        self._last = (now, cpu_s)
        limit = memory_limit(pid, rss)
        return ProcessReading(pid=pid, alive=True, cpu_usage_ratio=ratio, resident_memory_bytes=rss,
                              memory_limit_bytes=None if limit is None else limit[0],
                              memory_limit_source=None if limit is None else limit[1])
