"""Host and process sampling with psutil, including pid changes and a dead pid."""

from __future__ import annotations

import os
import subprocess
import sys

from collector.hardware import HostSampler, ProcessSampler


def test_host_ratios_in_range() -> None:
    r = HostSampler().sample()
    assert r.cpu_usage_ratio is not None and 0.0 <= r.cpu_usage_ratio <= 1.0
    assert r.memory_usage_ratio is not None and 0.0 < r.memory_usage_ratio <= 1.0


def test_process_cpu_rss_pid_change_and_death() -> None:
    ticks = iter(float(t) for t in range(100))
    s = ProcessSampler(clock=lambda: next(ticks))
    assert s.sample(None) is None
    first = s.sample(os.getpid())
    assert first is not None and first.alive and first.cpu_usage_ratio is None  # no CPU delta yet
    assert first.resident_memory_bytes and first.resident_memory_bytes > 1e6
    sum(i * i for i in range(200_000))
    second = s.sample(os.getpid())
    assert second is not None and second.cpu_usage_ratio is not None and 0.0 <= second.cpu_usage_ratio <= 1.0

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        r = s.sample(child.pid)  # a new pid starts a new baseline
        assert r is not None and r.alive and r.pid == child.pid and r.cpu_usage_ratio is None
    finally:
        child.kill()
        child.wait()
    dead = s.sample(child.pid)
    assert dead is not None and not dead.alive and dead.resident_memory_bytes is None
    again = s.sample(child.pid)
    assert again is not None and again.alive is False  # stays dead, never raises
