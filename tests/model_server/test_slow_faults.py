"""The slow faults' own arithmetic and parameter checks (the live effects are in tests/commands/test_inject.py)."""
from __future__ import annotations

import pytest

from incidentd.model_server.faults import (
    FaultParamError,
    FaultState,
    LatencyCreep,
    start_latency_creep,
    start_memory_leak,
)


def test_latency_creep_ramps_linearly_and_stops_at_its_cap() -> None:
    c = LatencyCreep(ramp=0.002, max_seconds=0.5, started=100.0)
    assert c.delay(100.0) == 0.0
    assert c.delay(150.0) == pytest.approx(0.1)
    assert c.delay(1000.0) == 0.5
    assert c.delay(50.0) == 0.0            # a clock read before the start adds nothing


def test_slow_fault_parameters_are_checked_and_named() -> None:
    state = FaultState()
    with pytest.raises(FaultParamError) as e:
        start_latency_creep(state, {"ramp": -1})
    assert e.value.field == "ramp"
    with pytest.raises(FaultParamError) as e:
        start_memory_leak(state, {"limit_megabytes": 10_000_000})
    assert e.value.field == "limit_megabytes"
    with pytest.raises(FaultParamError) as e:
        start_memory_leak(state, {"oom": "yes"})
    assert e.value.field == "oom"
    assert state.leak is None and state.creep is None
