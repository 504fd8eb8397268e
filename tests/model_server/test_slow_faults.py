"""The slow faults' own arithmetic and parameter checks (the live effects are in tests/commands/test_inject.py)."""
from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from incidentd.model_server.fault_params import (
    FaultKind,
    FaultParamError,
    MemoryLeakParams,
    parse_fault_params,
)
from incidentd.model_server.faults import FaultState, LatencyCreep, apply_fault


class Served:
    """The least a fault handler may touch: nothing of the model is needed by the slow faults."""

    def __init__(self, scratch: Path) -> None:
        import threading

        import torch

        self.lock = threading.RLock()
        self.model: torch.nn.Module | None = None
        self._scratch = scratch

    @property
    def scratch_dir(self) -> Path:
        return self._scratch

    def n_features(self) -> int:
        return 64

    def n_classes(self) -> int:
        return 10


def test_latency_creep_ramps_linearly_and_stops_at_its_cap() -> None:
    c = LatencyCreep(ramp=0.002, max_seconds=0.5, started=100.0)
    assert c.delay(100.0) == 0.0
    assert c.delay(150.0) == pytest.approx(0.1)
    assert c.delay(1000.0) == 0.5
    assert c.delay(50.0) == 0.0            # a clock read before the start adds nothing


@pytest.mark.parametrize(("kind", "raw", "field"), [
    (FaultKind.LATENCY_CREEP, {"ramp": -1}, "ramp"),
    (FaultKind.LATENCY_CREEP, {"max_seconds": "soon"}, "max_seconds"),
    (FaultKind.MEMORY_LEAK, {"limit_megabytes": 10_000_000}, "limit_megabytes"),
    (FaultKind.MEMORY_LEAK, {"oom": "yes"}, "oom"),
    (FaultKind.MEMORY_LEAK, {"oom": 1}, "oom"),
    (FaultKind.MEMORY_LEAK, {"leak": 3}, "leak"),
    (FaultKind.DISK_FILL, {"rate": 0}, "rate"),
    (FaultKind.DISK_FILL, {"megabytes": True}, "megabytes"),
])
def test_slow_fault_parameters_are_checked_and_named(kind: FaultKind, raw: dict[str, object], field: str) -> None:
    with pytest.raises(FaultParamError) as e:
        parse_fault_params(kind, raw)
    assert e.value.field == field


def test_the_cli_strings_of_the_slow_faults_parse_to_their_types() -> None:
    p = parse_fault_params(FaultKind.MEMORY_LEAK, {"rate": "100", "limit_megabytes": "150", "oom": "false"})
    assert p == MemoryLeakParams(rate=100.0, limit_megabytes=150, oom=False)


def test_a_leak_larger_than_the_host_can_hold_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    memory = namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(1024 * 2**20))
    state = FaultState()
    params = parse_fault_params(FaultKind.MEMORY_LEAK, {"limit_megabytes": 1000})
    with pytest.raises(FaultParamError) as e:
        apply_fault(FaultKind.MEMORY_LEAK, params, state, Served(tmp_path))
    assert e.value.field == "limit_megabytes"
    assert state.leak is None


def test_a_disk_fill_larger_than_half_the_free_space_is_refused(tmp_path: Path) -> None:
    import shutil

    state = FaultState()
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    if free_mb > 1_048_576:
        pytest.skip("more than 1 TiB free: the largest disk_fill allowed is refused nowhere here")
    params = parse_fault_params(FaultKind.DISK_FILL, {"megabytes": min(1_048_576, free_mb)})
    with pytest.raises(FaultParamError) as e:
        apply_fault(FaultKind.DISK_FILL, params, state, Served(tmp_path))
    assert e.value.field == "megabytes" and "refusing to fill the disk" in str(e.value)
    assert state.disk_fill is None and not (tmp_path / ".fault-disk-fill").exists()
