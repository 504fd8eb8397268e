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

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostReading:
    cpu_usage_ratio: float | None
    memory_usage_ratio: float | None


@dataclass(frozen=True, slots=True)
class ProcessReading:
    pid: int
    alive: bool
    cpu_usage_ratio: float | None  # CPU seconds per second / logical CPUs: 0..1 of the whole host
    resident_memory_bytes: float | None


class HostSampler:
    """Host-wide CPU and memory usage ratios."""

    def __init__(self) -> None:
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
        return HostReading(cpu_usage_ratio=cpu, memory_usage_ratio=mem)


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
        return ProcessReading(pid=pid, alive=True, cpu_usage_ratio=ratio, resident_memory_bytes=rss)
