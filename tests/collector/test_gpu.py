"""GPU sources: simulated (state file), NVML absent handled gracefully, NVML when present (or faked)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from collector.gpu import (
    GPUMode,
    GPUUnavailable,
    NoGPUSource,
    NvmlGPUSource,
    SimulatedGPUSource,
    make_gpu_source,
)


def write_state(path: Path, state: dict, bump: int) -> None:
    path.write_text(json.dumps(state))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000))  # a distinct mtime per write


def test_simulated_defaults_without_file() -> None:
    (r,) = SimulatedGPUSource().read()
    assert r.gpu == "0" and r.throttled is False
    assert r.utilization_ratio is not None and 0.0 <= r.utilization_ratio <= 1.0
    assert r.temperature_celsius == 55.0 and r.ecc_errors_total == 0 and r.xid_errors_total == 0


def test_simulated_state_file_changes_at_run_time(tmp_path: Path) -> None:
    path = tmp_path / "gpu.json"
    src = SimulatedGPUSource(path, count=2)
    assert src.read()[0].temperature_celsius == 55.0  # file absent: defaults
    write_state(path, {"temperature_celsius": 93, "throttled": True, "utilization": 97}, 1)
    r0, r1 = src.read()
    assert (r0.temperature_celsius, r0.throttled, r0.utilization_ratio) == (93.0, True, 0.97)
    assert r1.throttled is True
    write_state(path, {"ecc_errors": 4, "xid_errors": 1, "gpus": {"1": {"ecc_errors": 9}}}, 2)
    r0, r1 = src.read()
    assert r0.throttled is False and r0.ecc_errors_total == 4 and r0.xid_errors_total == 1
    assert r1.ecc_errors_total == 9
    write_state(path, {"temperature_celsius": "{broken", "x": 1}, 3)  # bad value: field falls back
    assert src.read()[0].temperature_celsius is None
    path.write_text("{not json")  # unreadable: previous state kept
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 4_000_000))
    assert len(src.read()) == 2


def test_nvml_absent_is_graceful(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    def fail() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    with pytest.raises(GPUUnavailable):
        NvmlGPUSource()
    assert isinstance(make_gpu_source("auto"), NoGPUSource)
    with pytest.raises(GPUUnavailable):
        make_gpu_source(GPUMode.NVML)
    assert isinstance(make_gpu_source("none"), NoGPUSource)
    assert isinstance(make_gpu_source("simulated"), SimulatedGPUSource)


def test_nvml_real_gpu_when_present() -> None:
    try:
        src = NvmlGPUSource()
    except GPUUnavailable:
        pytest.skip("no NVIDIA GPU on this machine")
    try:
        readings = src.read()
        assert readings
        for r in readings:
            assert r.memory_used_bytes is None or r.memory_used_bytes >= 0
            assert r.utilization_ratio is None or 0.0 <= r.utilization_ratio <= 1.0
            assert r.temperature_celsius is None or 0 < r.temperature_celsius < 130
    finally:
        src.close()
    assert src.read() == []


class FakeNvml:
    """Stands in for the NVML calls of a two-GPU machine (this machine has no GPU; the real path is above)."""

    def __init__(self, pynvml) -> None:
        self.nv = pynvml
        self.events = [(2, pynvml.nvmlEventTypeXidCriticalError)]
        self.shutdown = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        nv = self.nv

        class Util:
            gpu = 87

        class Mem:
            used, total = 3 * 2**30, 80 * 2**30

        class Event:
            def __init__(self, device: int, kind: int) -> None:
                self.device, self.eventType, self.eventData = device, kind, 79

        def not_supported(*_):
            raise nv.NVMLError(nv.NVML_ERROR_NOT_SUPPORTED)

        def wait(_set, _timeout):
            if not self.events:
                raise nv.NVMLError(nv.NVML_ERROR_TIMEOUT)
            return Event(*self.events.pop())

        patches = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: setattr(self, "shutdown", True),
            "nvmlDeviceGetCount": lambda: 2,
            "nvmlDeviceGetHandleByIndex": lambda i: 1 + i,
            "nvmlDeviceGetName": lambda h: b"NVIDIA H100",
            "nvmlDeviceGetUtilizationRates": lambda h: Util(),
            "nvmlDeviceGetMemoryInfo": lambda h: Mem(),
            "nvmlDeviceGetTemperature": lambda h, kind: 61 + h,
            "nvmlDeviceGetCurrentClocksEventReasons": lambda h: (
                nv.nvmlClocksThrottleReasonGpuIdle if h == 1 else nv.nvmlClocksThrottleReasonHwSlowdown
            ),
            "nvmlDeviceGetTotalEccErrors": lambda h, *a: 5 if h == 2 else not_supported(),
            "nvmlEventSetCreate": lambda: object(),
            "nvmlDeviceRegisterEvents": lambda *a: None,
            "nvmlEventSetWait_v2": wait,
            "nvmlEventSetFree": lambda s: None,
        }
        for name, fn in patches.items():
            monkeypatch.setattr(nv, name, fn)


def test_nvml_source_reads_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    fake = FakeNvml(pynvml)
    fake.install(monkeypatch)
    src = NvmlGPUSource()
    g0, g1 = src.read()
    assert (g0.gpu, g0.name, g0.utilization_ratio, g0.memory_used_bytes) == (
        "0",
        "NVIDIA H100",
        0.87,
        3 * 2**30,
    )
    assert g0.temperature_celsius == 62.0 and g1.temperature_celsius == 63.0
    assert g0.throttled is False and g1.throttled is True  # idle is not throttling; HW slowdown is
    assert g0.ecc_errors_total is None and g1.ecc_errors_total == 5.0  # unsupported field left out
    assert (g0.xid_errors_total, g1.xid_errors_total) == (0.0, 1.0)  # the Xid event was on the second GPU
    fake.events.append((1, pynvml.nvmlEventTypeXidCriticalError))
    assert src.read()[0].xid_errors_total == 1.0
    src.close()
    assert fake.shutdown and src.read() == []
