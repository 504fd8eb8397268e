"""What the sidecar adds for slow faults: the memory limit an RSS runs into, and free disk space (issue 18)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry

from collector.exposition import SidecarCollector
from collector.hardware import (
    DiskReading,
    HostReading,
    HostSampler,
    ProcessSampler,
    cgroup_memory,
    memory_limit,
)
from tests.collector.test_exposition import families, full_snapshot

GIB = 2**30


def fake_proc(tmp: Path, cgroup: str, mountinfo: str) -> Path:
    (tmp / "proc" / "77").mkdir(parents=True)
    (tmp / "proc" / "77" / "cgroup").write_text(cgroup)
    (tmp / "proc" / "77" / "mountinfo").write_text(mountinfo)
    return tmp / "proc"


def test_cgroup_v2_limit_is_the_tightest_along_the_hierarchy(tmp_path: Path) -> None:
    root = tmp_path / "sys" / "fs" / "cgroup"
    leaf = root / "kubepods" / "pod1" / "ctr"
    leaf.mkdir(parents=True)
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.current").write_text(str(1 * GIB))
    (root / "kubepods" / "pod1" / "memory.max").write_text(str(2 * GIB))
    (root / "kubepods" / "pod1" / "memory.current").write_text(str(GIB + GIB // 2))
    (root / "kubepods" / "memory.max").write_text(str(64 * GIB))
    proc = fake_proc(tmp_path, "0::/kubepods/pod1/ctr\n",
                     f"30 25 0:26 / {root} rw,nosuid shared:4 - cgroup2 cgroup2 rw\n")
    cg = cgroup_memory(77, proc)
    assert cg is not None and cg.limit_bytes == 2 * GIB and cg.usage_bytes == GIB + GIB // 2
    # the rest of the pod uses 0.5 GiB besides this process's 1 GiB: 1.5 GiB left for its RSS to reach
    assert memory_limit(77, float(GIB), proc) == (1.5 * GIB, "cgroup")


def test_cgroup_v1_limit_seen_from_inside_a_container(tmp_path: Path) -> None:
    mount = tmp_path / "sys" / "fs" / "cgroup" / "memory"
    mount.mkdir(parents=True)
    (mount / "memory.limit_in_bytes").write_text(str(3 * GIB))
    (mount / "memory.usage_in_bytes").write_text(str(GIB))
    # the container sees its own cgroup /docker/abc as the root of the mount
    proc = fake_proc(tmp_path, "4:memory:/docker/abc\n3:cpu:/docker/abc\n",
                     f"40 30 0:35 /docker/abc {mount} rw - cgroup cgroup rw,memory\n")
    cg = cgroup_memory(77, proc)
    assert cg is not None and cg.limit_bytes == 3 * GIB


def test_no_cgroup_limit_falls_back_to_host_memory(tmp_path: Path) -> None:
    mount = tmp_path / "cg"
    mount.mkdir()
    (mount / "memory.limit_in_bytes").write_text("9223372036854771712\n")    # v1's "unlimited"
    proc = fake_proc(tmp_path, "4:memory:/\n", f"40 30 0:35 / {mount} rw - cgroup cgroup rw,memory\n")
    assert cgroup_memory(77, proc) is None
    limit, source = memory_limit(77, 1e8, proc)     # type: ignore[misc]
    assert source == "host" and 1e8 < limit <= 1e8 + psutil.virtual_memory().total


def test_the_real_process_sampler_reports_a_limit_above_its_rss() -> None:
    ProcessSampler().sample(os.getpid())
    r = ProcessSampler().sample(os.getpid())
    assert r is not None and r.resident_memory_bytes is not None
    assert r.memory_limit_bytes is not None and r.memory_limit_bytes > r.resident_memory_bytes
    assert r.memory_limit_source in ("cgroup", "host")


def test_disk_free_space_of_configured_paths(tmp_path: Path) -> None:
    host = HostSampler(disk_paths=(str(tmp_path), str(tmp_path / "missing")))
    disks = host.sample().disks
    assert [d.path for d in disks] == [str(tmp_path)], "an unreadable path is left out, not reported as 0"
    assert 0 < disks[0].free_bytes <= disks[0].total_bytes


def test_limit_and_disk_gauges_are_exposed() -> None:
    snap = full_snapshot()
    assert snap.process is not None
    snap = dataclasses.replace(
        snap,
        host=HostReading(0.2, 0.4, disks=(DiskReading("/srv/registry", 5e9, 1e11),)),
        process=dataclasses.replace(snap.process, memory_limit_bytes=4e9, memory_limit_source="cgroup"),
    )
    reg = CollectorRegistry()
    reg.register(SidecarCollector(lambda: snap))
    fams = families(reg)
    (lim,) = fams["model_process_memory_limit_bytes"].samples
    assert lim.value == 4e9 and lim.labels["source"] == "cgroup"
    (free,) = fams["model_disk_free_bytes"].samples
    (total,) = fams["model_disk_total_bytes"].samples
    assert (free.value, total.value, free.labels["path"]) == (5e9, 1e11, "/srv/registry")
