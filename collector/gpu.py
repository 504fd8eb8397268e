"""GPU signals behind one small interface: NVML on a real machine, a simulated source for demos and tests.

    >>> src = SimulatedGPUSource(state_path=None)
    >>> [r.temperature_celsius for r in src.read()]
    [55.0]

The simulated source re-reads a small JSON file (``--gpu-sim-state FILE``) whenever it changes, so fault
injection can heat a GPU, throttle it or add ECC/Xid errors while the sidecar runs::

    {"temperature_celsius": 92, "throttled": true, "ecc_errors": 3, "xid_errors": 1, "utilization": 0.97}

Top-level keys apply to every simulated GPU; ``"gpus": {"1": {...}}`` overrides one of them.
"""

from __future__ import annotations

import ctypes
import enum
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from detectors.errors import IncidentdError

log = logging.getLogger(__name__)

GIB = 1024**3


class GPUUnavailable(IncidentdError):
    """NVML is not installed, has no driver, or sees no GPU."""


class GPUMode(enum.StrEnum):
    AUTO = "auto"
    NVML = "nvml"
    SIMULATED = "simulated"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class GPUReading:
    """One GPU at one moment; ``None`` where the device does not report a value."""

    gpu: str  # index as a string: the bounded ``gpu`` label
    name: str = ""
    utilization_ratio: float | None = None  # 0..1
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    throttled: bool | None = None
    throttle_reasons: int = 0  # NVML bitmask (0 for the simulated source)
    ecc_errors_total: float | None = None  # cumulative uncorrected (volatile) ECC errors
    xid_errors_total: float | None = None  # cumulative critical Xid events seen by this source


@runtime_checkable
class GPUSource(Protocol):
    def read(self) -> list[GPUReading]:
        """The current reading of every GPU; never raises for a single unsupported field."""
        ...

    def close(self) -> None: ...


class NoGPUSource:
    """No GPU: reads nothing."""

    def read(self) -> list[GPUReading]:
        return []

    def close(self) -> None:
        return None


class SimulatedGPUSource:
    """Simulated GPUs whose state comes from a JSON file that can be rewritten at run time.

    >>> src = SimulatedGPUSource(state_path="/tmp/gpu.json", count=2)
    >>> Path("/tmp/gpu.json").write_text('{"temperature_celsius": 91, "throttled": true}')
    >>> src.read()[0].throttled
    True
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "utilization": 0.35,
        "memory_used_bytes": 2 * GIB,
        "memory_total_bytes": 16 * GIB,
        "temperature_celsius": 55.0,
        "throttled": False,
        "ecc_errors": 0,
        "xid_errors": 0,
    }

    def __init__(
        self, state_path: str | os.PathLike[str] | None = None, count: int = 1, name: str = "Simulated GPU"
    ) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        self.count = int(count)
        self.name = name
        self._lock = threading.Lock()
        self._mtime_ns: int | None = None
        self._state: dict[str, Any] = {}

    def set_state(self, **state: Any) -> None:
        """Change the simulated state in process (tests); the file, when present, wins on its next change."""
        with self._lock:
            self._state = {**self._state, **state}

    def _load(self) -> None:
        if self.state_path is None:
            return
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            return
        if st.st_mtime_ns == self._mtime_ns:
            return
        try:
            data = json.loads(self.state_path.read_text() or "{}")
        except (OSError, ValueError) as exc:
            log.warning("simulated GPU state %s unreadable, keeping previous state: %s", self.state_path, exc)
            return
        if not isinstance(data, dict):
            log.warning("simulated GPU state %s is not a JSON object, ignored", self.state_path)
            return
        self._state = data
        self._mtime_ns = st.st_mtime_ns

    def read(self) -> list[GPUReading]:
        with self._lock:
            self._load()
            state = dict(self._state)
        per_gpu = state.pop("gpus", {}) or {}
        out = []
        for i in range(self.count):
            s = {**self.DEFAULTS, **state}
            override = (
                per_gpu.get(str(i))
                if isinstance(per_gpu, dict)
                else (per_gpu[i] if isinstance(per_gpu, list) and i < len(per_gpu) else None)
            )
            if isinstance(override, dict):
                s.update(override)
            out.append(_reading_from_state(str(i), self.name, s))
        return out

    def close(self) -> None:
        return None


def _num(value: Any, default: float | None = None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _reading_from_state(gpu: str, name: str, s: dict[str, Any]) -> GPUReading:
    util = _num(s.get("utilization", s.get("utilization_ratio")))
    if util is not None and util > 1.0:  # accept a percentage too
        util = util / 100.0
    temp = _num(s.get("temperature_celsius", s.get("temperature")))
    return GPUReading(
        gpu=gpu,
        name=name,
        utilization_ratio=None if util is None else min(max(util, 0.0), 1.0),
        memory_used_bytes=_num(s.get("memory_used_bytes")),
        memory_total_bytes=_num(s.get("memory_total_bytes")),
        temperature_celsius=temp,
        throttled=bool(s.get("throttled", False)),
        throttle_reasons=int(_num(s.get("throttle_reasons"), 0) or 0),
        ecc_errors_total=_num(s.get("ecc_errors", s.get("ecc_errors_total")), 0.0),
        xid_errors_total=_num(s.get("xid_errors", s.get("xid_errors_total")), 0.0),
    )


class NvmlGPUSource:
    """Real GPUs through NVML (``nvidia-ml-py``). Raises :class:`GPUUnavailable` when there is none.

    >>> src = NvmlGPUSource()      # doctest: +SKIP
    >>> src.read()[0].temperature_celsius
    """

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - dependency is declared
            raise GPUUnavailable("pynvml (nvidia-ml-py) is not installed") from exc
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise GPUUnavailable(f"NVML could not initialise: {exc}") from exc
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise GPUUnavailable(f"NVML could not count devices: {exc}") from exc
        if count == 0:
            pynvml.nvmlShutdown()
            raise GPUUnavailable("NVML sees no GPU")
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._keys = [_handle_key(h) for h in self._handles]
        self._names = [self._call(pynvml.nvmlDeviceGetName, h, default="") for h in self._handles]
        self._xid = [0] * count
        self._event_set = None
        self._closed = False
        self._ignored_reasons = (
            getattr(pynvml, "nvmlClocksThrottleReasonGpuIdle", 0x1)
            | getattr(pynvml, "nvmlClocksThrottleReasonApplicationsClocksSetting", 0x2)
            | getattr(pynvml, "nvmlClocksThrottleReasonDisplayClockSetting", 0x100)
        )
        self._register_xid_events()

    def _call(self, fn: Any, *args: Any, default: Any = None) -> Any:
        try:
            value = fn(*args)
        except self._nvml.NVMLError:
            return default
        return value.decode() if isinstance(value, bytes) else value

    def _register_xid_events(self) -> None:
        nv = self._nvml
        try:
            self._event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError:
            return
        for h in self._handles:
            try:
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, self._event_set)
            except nv.NVMLError:
                continue  # not supported on this device/driver: Xid stays unreported

    def _drain_xid(self) -> None:
        nv = self._nvml
        if self._event_set is None:
            return
        wait = getattr(nv, "nvmlEventSetWait_v2", None) or nv.nvmlEventSetWait
        for _ in range(64):  # bounded: never stall a scrape on an event storm
            try:
                data = wait(self._event_set, 0)
            except nv.NVMLError:
                return  # timeout (no event) or unsupported
            if (
                not int(getattr(data, "eventType", nv.nvmlEventTypeXidCriticalError))
                & nv.nvmlEventTypeXidCriticalError
            ):
                continue
            idx = self._keys.index(_handle_key(data.device)) if _handle_key(data.device) in self._keys else 0
            self._xid[idx] += 1

    def read(self) -> list[GPUReading]:
        nv = self._nvml
        if self._closed:
            return []
        self._drain_xid()
        reasons_fn = (
            getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        out = []
        for i, h in enumerate(self._handles):
            util = self._call(nv.nvmlDeviceGetUtilizationRates, h)
            mem = self._call(nv.nvmlDeviceGetMemoryInfo, h)
            temp = self._call(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
            reasons = self._call(reasons_fn, h)
            ecc = self._call(
                nv.nvmlDeviceGetTotalEccErrors, h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC
            )
            out.append(
                GPUReading(
                    gpu=str(i),
                    name=str(self._names[i] or ""),
                    utilization_ratio=None if util is None else float(util.gpu) / 100.0,
                    memory_used_bytes=None if mem is None else float(mem.used),
                    memory_total_bytes=None if mem is None else float(mem.total),
                    temperature_celsius=None if temp is None else float(temp),
                    throttled=None if reasons is None else bool(int(reasons) & ~self._ignored_reasons),
                    throttle_reasons=0 if reasons is None else int(reasons),
                    ecc_errors_total=None if ecc is None else float(ecc),
                    xid_errors_total=float(self._xid[i]) if self._event_set is not None else None,
                )
            )
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        nv = self._nvml
        if self._event_set is not None:
            self._call(nv.nvmlEventSetFree, self._event_set)
        self._call(nv.nvmlShutdown)


def _handle_key(handle: Any) -> Any:
    """NVML device handles are ctypes pointers: compare them by address, not identity."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return handle


def make_gpu_source(
    mode: GPUMode | str, sim_state: str | os.PathLike[str] | None = None, sim_count: int = 1
) -> GPUSource:
    """``auto`` = NVML when a GPU is found, else none; ``nvml`` raises GPUUnavailable when there is none."""
    mode = GPUMode(mode)
    if mode is GPUMode.NONE:
        return NoGPUSource()
    if mode is GPUMode.SIMULATED:
        return SimulatedGPUSource(sim_state, count=sim_count)
    try:
        return NvmlGPUSource()
    except GPUUnavailable as exc:
        if mode is GPUMode.NVML:
            raise
        log.info("no GPU found through NVML (%s); GPU signals disabled", exc)
        return NoGPUSource()
