"""Fault injection for the demo model server: damage the live weights or the process, on purpose.

Only reachable when the server was started with ``--enable-fault-injection``. Runtime faults (hang,
latency, null_features, input_drift, unit_change, unseen_categories, label_stall, concept_drift,
memory_balloon) are cleared by ``clear()``; weight damage is not (clamp or load repairs it); starvation
threads run until their ``seconds`` elapse or the process exits (a restart cures it).

The data faults transform requests *inside* the server, before the prediction log records them, so that
``incidentd inject`` can turn them on without the traffic driver; concept_drift and label_stall act on
``/feedback``. They are simulations of what an upstream pipeline would do (docs/faults.md).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class FaultKind(enum.StrEnum):
    NONFINITE_WEIGHTS = "nonfinite_weights"
    EXPLODING_WEIGHTS = "exploding_weights"
    STARVATION = "starvation"
    HANG = "hang"
    CRASH = "crash"
    LATENCY = "latency"
    NULL_FEATURES = "null_features"
    INPUT_DRIFT = "input_drift"
    UNIT_CHANGE = "unit_change"
    UNSEEN_CATEGORIES = "unseen_categories"
    LABEL_STALL = "label_stall"
    CONCEPT_DRIFT = "concept_drift"
    MEMORY_BALLOON = "memory_balloon"
    # slow faults (issue 18)
    MEMORY_LEAK = "memory_leak"
    LATENCY_CREEP = "latency_creep"
    DISK_FILL = "disk_fill"


# Central pixels of the 8x8 digits: they vary most, so a shift there is what the drift tests see first.
DEFAULT_DRIFT_FEATURES: tuple[int, ...] = (19, 20, 27, 28, 35, 36, 43, 44)
MAX_HELD_LABELS = 100_000


class FaultParamError(ValueError):
    """A fault parameter is missing or out of range; ``field`` names it."""

    def __init__(self, field: str, msg: str) -> None:
        self.field = field
        super().__init__(msg)


def _num(params: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FaultParamError(key, f"params.{key} must be a number")
    if not (lo <= float(v) <= hi):
        raise FaultParamError(key, f"params.{key} must be in [{lo}, {hi}], got {v}")
    return float(v)


def _features(params: dict[str, Any], key: str, default: tuple[int, ...], width: int) -> tuple[int, ...]:
    v = params.get(key, list(default))
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v or any(isinstance(f, bool) or not isinstance(f, int) for f in v):
        raise FaultParamError(key, f"params.{key} must be a non-empty list of feature indices")
    bad = [f for f in v if not 0 <= f < width]
    if bad:
        raise FaultParamError(key, f"params.{key}: indices {bad} out of range 0..{width - 1}")
    return tuple(dict.fromkeys(int(f) for f in v))


@dataclass(frozen=True, slots=True)
class InputTransform:
    """``x[rows, features] = x * scale + shift`` on a ``fraction`` of rows (1.0: every row)."""

    fraction: float
    features: tuple[int, ...]
    scale: float = 1.0
    shift: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "features": list(self.features), "scale": self.scale,
                "shift": self.shift}


@dataclass(frozen=True, slots=True)
class UnseenCodes:
    """Replace values of ``features`` on a ``fraction`` of rows with integer codes in [low, high]."""

    fraction: float
    features: tuple[int, ...]
    low: int
    high: int

    def as_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "features": list(self.features), "low": self.low, "high": self.high}


@dataclass(frozen=True, slots=True)
class LabelRemap:
    """A ``fraction`` of incoming labels y become ``(y + shift) % classes`` (concept-drift simulation)."""

    fraction: float
    shift: int

    def as_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "shift": self.shift}


@dataclass
class FaultState:
    """Runtime faults the predict path consults, plus the starvation threads it started."""

    hang_until: float = 0.0
    latency_seconds: float = 0.0
    null_fraction: float = 0.0
    starvation_threads: list[threading.Thread] = field(default_factory=list)
    starvation_stop: threading.Event = field(default_factory=threading.Event)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(1234))
    input_drift: InputTransform | None = None
    unit_change: InputTransform | None = None
    unseen: UnseenCodes | None = None
    label_stall: str | None = None                     # "hold" or "drop"
    held_labels: list[tuple[str, int]] = field(default_factory=list)
    dropped_labels: int = 0
    concept_drift: LabelRemap | None = None
    balloon: MemoryBalloon | None = None
    # slow faults (issue 18): cleared by clear(); a leak that reaches its limit exits like an OOM kill
    leak: MemoryLeak | None = None
    creep: LatencyCreep | None = None
    disk_fill: DiskFill | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def active(self) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {}
        if self.hang_until > now:
            out["hang"] = {"seconds_left": round(self.hang_until - now, 3)}
        if self.latency_seconds:
            out["latency"] = {"seconds": self.latency_seconds}
        if self.null_fraction:
            out["null_features"] = {"fraction": self.null_fraction}
        if self.input_drift:
            out["input_drift"] = self.input_drift.as_dict()
        if self.unit_change:
            out["unit_change"] = {"feature": self.unit_change.features[0], "factor": self.unit_change.scale}
        if self.unseen:
            out["unseen_categories"] = self.unseen.as_dict()
        if self.label_stall:
            out["label_stall"] = {"mode": self.label_stall, "held": len(self.held_labels),
                                  "dropped": self.dropped_labels}
        if self.concept_drift:
            out["concept_drift"] = self.concept_drift.as_dict()
        if self.balloon is not None:
            out["memory_balloon"] = self.balloon.status()
        if self.leak is not None:
            out["memory_leak"] = self.leak.status()
        if self.creep is not None:
            out["latency_creep"] = self.creep.status()
        if self.disk_fill is not None:
            out["disk_fill"] = self.disk_fill.status()
        alive = [t for t in self.starvation_threads if t.is_alive()]
        if alive:
            out["starvation"] = {"threads": len(alive)}
        return out

    def clear(self) -> tuple[list[str], list[tuple[str, int]]]:
        """Clear runtime faults; starvation and weight damage stay.

        Returns what was cleared and the labels a ``hold`` label stall kept back: the caller records them,
        as a stalled label pipeline delivers its backlog once it recovers.
        """
        active = self.active()
        cleared = [k for k in ("hang", "latency", "null_features", "input_drift", "unit_change",
                               "unseen_categories", "label_stall", "concept_drift", "memory_balloon",
                               "memory_leak", "latency_creep", "disk_fill")
                   if k in active]
        self.hang_until = 0.0
        self.latency_seconds = 0.0
        self.null_fraction = 0.0
        self.input_drift = self.unit_change = self.unseen = self.concept_drift = None
        with self.lock:
            released = self.held_labels if self.label_stall == "hold" else []
            self.label_stall, self.held_labels, self.dropped_labels = None, [], 0
        if self.balloon is not None:
            self.balloon.release()
            self.balloon = None
        for slow in (self.leak, self.disk_fill):
            if slow is not None:
                slow.release()
        self.leak = self.creep = self.disk_fill = None
        return cleared, released

    def stop_starvation(self) -> None:
        """Stop burner threads (used at shutdown and by tests; the API does not expose it)."""
        self.starvation_stop.set()
        for t in self.starvation_threads:
            t.join(timeout=2)
        self.starvation_threads.clear()
        self.starvation_stop = threading.Event()

    # --- the predict path --------------------------------------------------------------------------
    async def before_inference(self) -> None:
        """Apply latency and hang faults before the model runs.

        Awaited on the event loop, so stalled requests hold no worker thread: admin endpoints (and
        DELETE /admin/faults) keep answering however many predictions hang.
        """
        delay = self.latency_seconds + (self.creep.delay() if self.creep is not None else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        while (left := self.hang_until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    def apply_input_faults(self, x: np.ndarray) -> np.ndarray:
        """Covariate drift, unit change and unseen codes, applied before the prediction log records x."""
        for t in (self.input_drift, self.unit_change):
            if t is None:
                continue
            rows = self.rng.random(len(x)) < t.fraction if t.fraction < 1.0 else np.ones(len(x), bool)
            if rows.any():
                x = x.copy()
                cols = list(t.features)
                x[np.ix_(rows, cols)] = x[np.ix_(rows, cols)] * t.scale + t.shift
        u = self.unseen
        if u is not None:
            rows = self.rng.random(len(x)) < u.fraction
            if rows.any():
                x = x.copy()
                cols = list(u.features)
                codes = self.rng.integers(u.low, u.high + 1, size=(int(rows.sum()), len(cols)))
                x[np.ix_(rows, cols)] = codes
        return x

    def filter_feedback(self, pairs: list[tuple[str, int]], n_classes: int) -> list[tuple[str, int]]:
        """Concept drift remaps labels; a label stall holds or drops them. Returns what gets recorded."""
        cd = self.concept_drift
        if cd is not None:
            pairs = [(rid, (y + cd.shift) % n_classes if self.rng.random() < cd.fraction else y)
                     for rid, y in pairs]
        with self.lock:
            if self.label_stall == "hold":
                self.held_labels.extend(pairs)
                overflow = len(self.held_labels) - MAX_HELD_LABELS
                if overflow > 0:
                    del self.held_labels[:overflow]
                    self.dropped_labels += overflow
                return []
            if self.label_stall == "drop":
                self.dropped_labels += len(pairs)
                return []
        return pairs

    def apply_null_features(self, x: np.ndarray) -> np.ndarray:
        if self.null_fraction <= 0:
            return x
        mask = self.rng.random(x.shape) < self.null_fraction
        if not mask.any():
            return x
        x = x.copy()
        x[mask] = np.nan
        return x


def _pick_tensor(model: torch.nn.Module, name: str | None) -> tuple[str, torch.Tensor]:
    params = dict(model.named_parameters())
    if name is None:
        name = next(n for n in params if n.endswith("weight"))
    if name not in params:
        raise FaultParamError("tensor", f"params.tensor {name!r} is not a parameter; known: {sorted(params)}")
    return name, params[name]


def inject_weights(model: torch.nn.Module, kind: FaultKind, params: dict[str, Any],
                   rng: np.random.Generator) -> dict[str, Any]:
    """Write NaN/inf or scaled values into the LIVE parameters; returns what was done."""
    import torch

    name, t = _pick_tensor(model, params.get("tensor"))
    count = int(_num(params, "count", 10 if kind is FaultKind.NONFINITE_WEIGHTS else max(1, t.numel() // 20),
                     1, t.numel()))
    idx = torch.as_tensor(rng.choice(t.numel(), size=count, replace=False), device=t.device)
    with torch.no_grad():
        flat = t.view(-1)
        if kind is FaultKind.NONFINITE_WEIGHTS:
            value = params.get("value", "nan")
            if value not in ("nan", "inf", "-inf"):
                raise FaultParamError("value", "params.value must be 'nan', 'inf' or '-inf'")
            flat[idx] = float(value)
            return {"tensor": name, "count": count, "value": value}
        scale = _num(params, "scale", 1000.0, -1e30, 1e30)
        flat[idx] = flat[idx] * scale
        return {"tensor": name, "count": count, "scale": scale}


def _burn(stop: threading.Event, deadline: float) -> None:
    # a tight pure-Python loop holds the GIL for whole switch intervals: every other thread waits
    while not stop.is_set() and (deadline <= 0 or time.monotonic() < deadline):
        x = 0
        for i in range(20_000):
            x += i * i


def start_starvation(state: FaultState, params: dict[str, Any]) -> dict[str, Any]:
    threads = int(_num(params, "threads", 4, 1, 64))
    seconds = _num(params, "seconds", 0.0, 0.0, 86_400.0)
    deadline = time.monotonic() + seconds if seconds > 0 else 0.0
    for i in range(threads):
        th = threading.Thread(target=_burn, args=(state.starvation_stop, deadline),
                              name=f"fault-starvation-{i}", daemon=True)
        th.start()
        state.starvation_threads.append(th)
    return {"threads": threads, "seconds": seconds or None}


def start_hang(state: FaultState, params: dict[str, Any]) -> dict[str, Any]:
    seconds = _num(params, "seconds", 60.0, 0.0, 86_400.0)
    state.hang_until = time.monotonic() + seconds
    return {"seconds": seconds}


def schedule_crash(params: dict[str, Any]) -> dict[str, Any]:
    delay = _num(params, "delay_seconds", 0.2, 0.0, 60.0)
    code = int(_num(params, "exit_code", 3, 0, 255))
    log.warning("fault crash: process exits in %.2fs with code %d", delay, code)
    timer = threading.Timer(delay, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    return {"delay_seconds": delay, "exit_code": code}


# --- data faults ------------------------------------------------------------------------------------
def start_input_drift(state: FaultState, params: dict[str, Any], width: int) -> dict[str, Any]:
    t = InputTransform(_num(params, "fraction", 0.5, 0.0, 1.0),
                       _features(params, "features", DEFAULT_DRIFT_FEATURES, width),
                       _num(params, "scale", 1.0, -1e6, 1e6), _num(params, "shift", 8.0, -1e6, 1e6))
    state.input_drift = t
    return t.as_dict()


def start_unit_change(state: FaultState, params: dict[str, Any], width: int) -> dict[str, Any]:
    (feature,) = _features(params, "feature", (DEFAULT_DRIFT_FEATURES[0],), width)[:1]
    factor = _num(params, "factor", 1000.0, -1e6, 1e6)
    state.unit_change = InputTransform(1.0, (feature,), factor, 0.0)
    return {"feature": feature, "factor": factor}


def start_unseen_categories(state: FaultState, params: dict[str, Any], width: int) -> dict[str, Any]:
    low = int(_num(params, "low", 17, -1e9, 1e9))
    high = int(_num(params, "high", 64, -1e9, 1e9))
    if high < low:
        raise FaultParamError("high", f"params.high ({high}) must be >= params.low ({low})")
    u = UnseenCodes(_num(params, "fraction", 0.3, 0.0, 1.0),
                    _features(params, "features", DEFAULT_DRIFT_FEATURES, width), low, high)
    state.unseen = u
    return u.as_dict()


def start_label_stall(state: FaultState, params: dict[str, Any]) -> dict[str, Any]:
    mode = params.get("mode", "hold")
    if mode not in ("hold", "drop"):
        raise FaultParamError("mode", "params.mode must be 'hold' (release on clear) or 'drop'")
    with state.lock:
        state.label_stall = mode
    return {"mode": mode}


def start_concept_drift(state: FaultState, params: dict[str, Any], n_classes: int) -> dict[str, Any]:
    shift = int(_num(params, "shift", 1, 1, n_classes - 1))
    r = LabelRemap(_num(params, "fraction", 0.5, 0.0, 1.0), shift)
    state.concept_drift = r
    return r.as_dict()


# --- memory pressure ----------------------------------------------------------------------------------
class MemoryBalloon:
    """A thread that grows resident memory by ``step_mb`` every ``interval`` seconds up to ``target_mb``.

    Pages are written (not just reserved), so RSS really grows; ``release()`` frees them.
    """

    def __init__(self, target_mb: int, step_mb: int, interval: float) -> None:
        self.target_mb, self.step_mb, self.interval = target_mb, step_mb, interval
        self._chunks: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._grow, name="fault-memory-balloon", daemon=True)
        self._thread.start()

    @property
    def allocated_mb(self) -> int:
        return sum(c.nbytes for c in list(self._chunks)) // 2**20

    def _grow(self) -> None:
        while not self._stop.is_set() and self.allocated_mb < self.target_mb:
            step = min(self.step_mb, self.target_mb - self.allocated_mb)
            self._chunks.append(np.full(step * 2**20, 0xA5, dtype=np.uint8))
            self._stop.wait(self.interval)

    def status(self) -> dict[str, Any]:
        return {"allocated_mb": self.allocated_mb, "target_mb": self.target_mb}

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._chunks.clear()


def start_memory_balloon(state: FaultState, params: dict[str, Any]) -> dict[str, Any]:
    import psutil

    target = int(_num(params, "megabytes", 768, 1, 65_536))
    step = int(_num(params, "step_megabytes", 64, 1, 65_536))
    interval = _num(params, "interval_seconds", 0.5, 0.0, 3600.0)
    available_mb = psutil.virtual_memory().available // 2**20
    if target > 0.75 * available_mb:
        raise FaultParamError("megabytes", f"params.megabytes {target} is more than 75% of the "
                                           f"{available_mb} MB available: refusing to OOM the host")
    if state.balloon is not None:
        state.balloon.release()
    state.balloon = MemoryBalloon(target, step, interval)
    return {"megabytes": target, "step_megabytes": step, "interval_seconds": interval}


# --- slow faults (issue 18) ----------------------------------------------------------------------------
class MemoryLeak:
    """Resident memory grows by ``rate_mb`` per second, page by page, until ``limit_mb`` has leaked; then the
    process exits with 137, as the OOM killer would end it (``oom``), or the growth just stops.

    The limit is the point of harm the fault bench measures its detection margin against.
    """

    def __init__(self, rate_mb: float, limit_mb: int, oom: bool, tick: float = 0.25) -> None:
        self.rate_mb, self.limit_mb, self.oom, self.tick = rate_mb, limit_mb, oom, tick
        self.started = time.monotonic()
        self._chunks: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._grow, name="fault-memory-leak", daemon=True)
        self._thread.start()

    @property
    def leaked_mb(self) -> float:
        return sum(c.nbytes for c in list(self._chunks)) / 2**20

    def _grow(self) -> None:
        while not self._stop.wait(self.tick):
            due = min(self.limit_mb, self.rate_mb * (time.monotonic() - self.started)) - self.leaked_mb
            if due >= 1 / 1024:
                self._chunks.append(np.full(int(due * 2**20), 0x5A, dtype=np.uint8))   # written: RSS grows
            if self.leaked_mb >= self.limit_mb:
                if self.oom:
                    log.error("fault memory_leak: %d MB leaked, the limit: exiting as an OOM kill would (137)",
                              self.limit_mb)
                    os._exit(137)
                return

    def status(self) -> dict[str, Any]:
        return {"leaked_mb": round(self.leaked_mb, 1), "rate_mb_per_second": self.rate_mb,
                "limit_megabytes": self.limit_mb, "oom": self.oom,
                "seconds_to_limit": round(max(0.0, (self.limit_mb - self.leaked_mb) / self.rate_mb), 1)}

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._chunks.clear()


def start_memory_leak(state: FaultState, params: dict[str, Any]) -> dict[str, Any]:
    import psutil

    rate = _num(params, "rate", 2.0, 0.01, 1024.0)
    limit = int(_num(params, "limit_megabytes", 1024, 1, 65_536))
    oom = params.get("oom", True)
    if not isinstance(oom, bool):
        raise FaultParamError("oom", "params.oom must be true or false")
    available_mb = psutil.virtual_memory().available // 2**20
    if limit > 0.75 * available_mb:
        raise FaultParamError("limit_megabytes", f"params.limit_megabytes {limit} is more than 75% of the "
                                                 f"{available_mb} MB available: refusing to OOM the host")
    if state.leak is not None:
        state.leak.release()
    state.leak = MemoryLeak(rate, limit, oom)
    return {"rate": rate, "limit_megabytes": limit, "oom": oom, "seconds_to_limit": round(limit / rate, 1)}


@dataclass(frozen=True, slots=True)
class LatencyCreep:
    """Every /predict waits ``ramp`` seconds longer per second since the start, up to ``max_seconds``."""

    ramp: float
    max_seconds: float
    started: float

    def delay(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return min(self.max_seconds, self.ramp * max(0.0, now - self.started))

    def status(self) -> dict[str, Any]:
        return {"ramp": self.ramp, "max_seconds": self.max_seconds, "added_seconds": round(self.delay(), 4)}


def start_latency_creep(state: FaultState, params: dict[str, Any]) -> dict[str, Any]:
    creep = LatencyCreep(_num(params, "ramp", 0.001, 1e-6, 10.0), _num(params, "max_seconds", 1.0, 0.0, 600.0),
                         time.monotonic())
    state.creep = creep
    return {"ramp": creep.ramp, "max_seconds": creep.max_seconds,
            "seconds_to_max": round(creep.max_seconds / creep.ramp, 1)}


class DiskFill:
    """Writes ``rate_mb`` per second of ballast files under ``directory`` until ``megabytes`` are written.

    Written and fsynced (not sparse), so the filesystem's free space really shrinks; ``release()``
    deletes the files.
    """

    def __init__(self, directory: Path, rate_mb: float, megabytes: int, tick: float = 0.25) -> None:
        self.directory, self.rate_mb, self.megabytes, self.tick = directory, rate_mb, megabytes, tick
        self.directory.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="fault-disk-fill", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        block = b"\xa5" * 2**20
        with open(self.directory / "ballast.bin", "ab") as f:
            while not self._stop.wait(self.tick) and self.written < self.megabytes * 2**20:
                due = min(self.megabytes * 2**20, int(self.rate_mb * 2**20 * (time.monotonic() - self.started)))
                while self.written < due and not self._stop.is_set():
                    n = min(len(block), due - self.written)
                    f.write(block[:n])
                    self.written += n
                f.flush()
                os.fsync(f.fileno())

    def status(self) -> dict[str, Any]:
        return {"written_mb": round(self.written / 2**20, 1), "rate_mb_per_second": self.rate_mb,
                "megabytes": self.megabytes, "directory": str(self.directory)}

    def release(self) -> None:
        import shutil

        self._stop.set()
        self._thread.join(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_disk_fill(state: FaultState, params: dict[str, Any], directory: Path) -> dict[str, Any]:
    import shutil

    rate = _num(params, "rate", 20.0, 0.01, 4096.0)
    megabytes = int(_num(params, "megabytes", 1024, 1, 1_048_576))
    free_mb = shutil.disk_usage(directory.parent if not directory.exists() else directory).free // 2**20
    if megabytes > 0.5 * free_mb:
        raise FaultParamError("megabytes", f"params.megabytes {megabytes} is more than half of the {free_mb} MB "
                                           f"free on {directory}: refusing to fill the disk")
    if state.disk_fill is not None:
        state.disk_fill.release()
    state.disk_fill = DiskFill(directory, rate, megabytes)
    return {"rate": rate, "megabytes": megabytes, "directory": str(directory),
            "seconds_to_limit": round(megabytes / rate, 1)}
