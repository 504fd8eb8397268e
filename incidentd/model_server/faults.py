"""Fault injection for the demo model server: damage the live weights or the process, on purpose.

Only reachable when the server was started with ``--enable-fault-injection``. Runtime faults (hang,
latency, null_features, input_drift, unit_change, unseen_categories, label_stall, concept_drift,
memory_balloon and the slow faults memory_leak, latency_creep, disk_fill) are cleared by ``clear()``; weight damage is not (clamp or load repairs it); starvation
threads run until their ``seconds`` elapse or the process exits (a restart cures it).

The data faults transform requests *inside* the server, before the prediction log records them, so that
``incidentd inject`` can turn them on without the traffic driver; concept_drift and label_stall act on
``/feedback``. They are simulations of what an upstream pipeline would do (docs/faults.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from incidentd.model_server.fault_params import (
    ConceptDriftParams,
    CrashParams,
    DiskFillParams,
    ExplodingWeightsParams,
    FaultKind,
    FaultParamError,
    FaultParams,
    HangParams,
    InputDriftParams,
    LabelStallParams,
    LatencyCreepParams,
    LatencyParams,
    MemoryBalloonParams,
    MemoryLeakParams,
    NonfiniteWeightsParams,
    NullFeaturesParams,
    StarvationParams,
    UnitChangeParams,
    UnseenCategoriesParams,
)

if TYPE_CHECKING:
    import torch

__all__ = ["HANDLERS", "FaultKind", "FaultParamError", "FaultState", "ServedModel", "apply_fault"]

log = logging.getLogger(__name__)


MAX_HELD_LABELS = 100_000


def _features(features: list[int], key: str, width: int) -> tuple[int, ...]:
    bad = [f for f in features if not 0 <= f < width]
    if bad:
        raise FaultParamError(key, f"indices {bad} out of range 0..{width - 1}")
    return tuple(dict.fromkeys(int(f) for f in features))


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
        cleared: list[str] = [k for k in ("hang", "latency", "null_features", "input_drift", "unit_change",
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
                cols = np.asarray(t.features, dtype=np.intp)
                x[np.ix_(rows, cols)] = x[np.ix_(rows, cols)] * t.scale + t.shift
        u = self.unseen
        if u is not None:
            rows = self.rng.random(len(x)) < u.fraction
            if rows.any():
                x = x.copy()
                cols = np.asarray(u.features, dtype=np.intp)
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


class ServedModel(Protocol):
    """What a fault handler may touch of the served model (``incidentd.model_server.app.ModelHolder``)."""

    lock: threading.RLock
    model: torch.nn.Module | None

    def n_features(self) -> int: ...

    def n_classes(self) -> int: ...

    @property
    def scratch_dir(self) -> Path:
        """Where this server writes (next to its registry): the disk_fill fault fills this filesystem."""
        ...


def _pick_tensor(model: torch.nn.Module, name: str | None) -> tuple[str, torch.Tensor]:
    params = dict(model.named_parameters())
    if name is None:
        name = next(n for n in params if n.endswith("weight"))
    if name not in params:
        raise FaultParamError("tensor", f"{name!r} is not a parameter; known: {sorted(params)}")
    return name, params[name]


def _damage(model: torch.nn.Module, tensor: str | None, count: int | None, default_count: Callable[[int], int],
            rng: np.random.Generator, write: Callable[[torch.Tensor, torch.Tensor], None]) -> tuple[str, int]:
    import torch

    name, t = _pick_tensor(model, tensor)
    n = default_count(t.numel()) if count is None else count
    if n > t.numel():
        raise FaultParamError("count", f"must be <= {t.numel()} (entries in {name}), got {n}")
    idx = torch.as_tensor(rng.choice(t.numel(), size=n, replace=False), device=t.device)
    with torch.no_grad():
        write(t.view(-1), idx)
    return name, n


def nonfinite_weights(state: FaultState, served: ServedModel, p: NonfiniteWeightsParams) -> dict[str, Any]:
    """Write NaN/inf into random entries of the LIVE parameters."""

    def write(flat: torch.Tensor, idx: torch.Tensor) -> None:
        flat[idx] = float(p.value)

    with served.lock:
        assert served.model is not None
        name, count = _damage(served.model, p.tensor, p.count, lambda n: n, state.rng, write)
    return {"tensor": name, "count": count, "value": p.value}


def exploding_weights(state: FaultState, served: ServedModel, p: ExplodingWeightsParams) -> dict[str, Any]:
    """Multiply random entries of the LIVE parameters (finite but huge)."""

    def write(flat: torch.Tensor, idx: torch.Tensor) -> None:
        flat[idx] = flat[idx] * p.scale

    with served.lock:
        assert served.model is not None
        name, count = _damage(served.model, p.tensor, p.count, lambda n: max(1, n // 20), state.rng, write)
    return {"tensor": name, "count": count, "scale": p.scale}


def _burn(stop: threading.Event, deadline: float) -> None:
    # a tight pure-Python loop holds the GIL for whole switch intervals: every other thread waits
    while not stop.is_set() and (deadline <= 0 or time.monotonic() < deadline):
        x = 0
        for i in range(20_000):
            x += i * i


def start_starvation(state: FaultState, served: ServedModel, p: StarvationParams) -> dict[str, Any]:
    deadline = time.monotonic() + p.seconds if p.seconds > 0 else 0.0
    for i in range(p.threads):
        th = threading.Thread(target=_burn, args=(state.starvation_stop, deadline),
                              name=f"fault-starvation-{i}", daemon=True)
        th.start()
        state.starvation_threads.append(th)
    return {"threads": p.threads, "seconds": p.seconds or None}


def start_hang(state: FaultState, served: ServedModel, p: HangParams) -> dict[str, Any]:
    state.hang_until = time.monotonic() + p.seconds
    return {"seconds": p.seconds}


def schedule_crash(state: FaultState, served: ServedModel, p: CrashParams) -> dict[str, Any]:
    log.warning("fault crash: process exits in %.2fs with code %d", p.delay_seconds, p.exit_code)
    timer = threading.Timer(p.delay_seconds, os._exit, args=(p.exit_code,))
    timer.daemon = True
    timer.start()
    return {"delay_seconds": p.delay_seconds, "exit_code": p.exit_code}


def start_latency(state: FaultState, served: ServedModel, p: LatencyParams) -> dict[str, Any]:
    state.latency_seconds = p.seconds
    return {"seconds": p.seconds}


def start_null_features(state: FaultState, served: ServedModel, p: NullFeaturesParams) -> dict[str, Any]:
    state.null_fraction = p.fraction
    return {"fraction": p.fraction}


# --- data faults ------------------------------------------------------------------------------------
def start_input_drift(state: FaultState, served: ServedModel, p: InputDriftParams) -> dict[str, Any]:
    t = InputTransform(p.fraction, _features(p.features, "features", served.n_features()), p.scale, p.shift)
    state.input_drift = t
    return t.as_dict()


def start_unit_change(state: FaultState, served: ServedModel, p: UnitChangeParams) -> dict[str, Any]:
    (feature,) = _features([p.feature], "feature", served.n_features())
    state.unit_change = InputTransform(1.0, (feature,), p.factor, 0.0)
    return {"feature": feature, "factor": p.factor}


def start_unseen_categories(state: FaultState, served: ServedModel, p: UnseenCategoriesParams) -> dict[str, Any]:
    u = UnseenCodes(p.fraction, _features(p.features, "features", served.n_features()), p.low, p.high)
    state.unseen = u
    return u.as_dict()


def start_label_stall(state: FaultState, served: ServedModel, p: LabelStallParams) -> dict[str, Any]:
    with state.lock:
        state.label_stall = p.mode
    return {"mode": p.mode}


def start_concept_drift(state: FaultState, served: ServedModel, p: ConceptDriftParams) -> dict[str, Any]:
    n_classes = served.n_classes()
    if p.shift > n_classes - 1:
        raise FaultParamError("shift", f"must be in 1..{n_classes - 1} (the model has {n_classes} classes), "
                                       f"got {p.shift}")
    r = LabelRemap(p.fraction, p.shift)
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


def start_memory_balloon(state: FaultState, served: ServedModel, p: MemoryBalloonParams) -> dict[str, Any]:
    import psutil

    available_mb = psutil.virtual_memory().available // 2**20
    if p.megabytes > 0.75 * available_mb:
        raise FaultParamError("megabytes", f"{p.megabytes} is more than 75% of the "
                                           f"{available_mb} MB available: refusing to OOM the host")
    if state.balloon is not None:
        state.balloon.release()
    state.balloon = MemoryBalloon(p.megabytes, p.step_megabytes, p.interval_seconds)
    return {"megabytes": p.megabytes, "step_megabytes": p.step_megabytes, "interval_seconds": p.interval_seconds}


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


def start_memory_leak(state: FaultState, served: ServedModel, p: MemoryLeakParams) -> dict[str, Any]:
    import psutil

    available_mb = psutil.virtual_memory().available // 2**20
    if p.limit_megabytes > 0.75 * available_mb:
        raise FaultParamError("limit_megabytes", f"{p.limit_megabytes} is more than 75% of the "
                                                 f"{available_mb} MB available: refusing to OOM the host")
    if state.leak is not None:
        state.leak.release()
    state.leak = MemoryLeak(p.rate, p.limit_megabytes, p.oom)
    return {"rate": p.rate, "limit_megabytes": p.limit_megabytes, "oom": p.oom,
            "seconds_to_limit": round(p.limit_megabytes / p.rate, 1)}


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


def start_latency_creep(state: FaultState, served: ServedModel, p: LatencyCreepParams) -> dict[str, Any]:
    creep = LatencyCreep(p.ramp, p.max_seconds, time.monotonic())
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


DISK_FILL_DIR = ".fault-disk-fill"


def start_disk_fill(state: FaultState, served: ServedModel, p: DiskFillParams) -> dict[str, Any]:
    """Fill the filesystem the server writes to: a scratch directory next to its registry, removed on clear."""
    import shutil

    directory = served.scratch_dir / DISK_FILL_DIR
    free_mb = shutil.disk_usage(directory if directory.exists() else directory.parent).free // 2**20
    if p.megabytes > 0.5 * free_mb:
        raise FaultParamError("megabytes", f"{p.megabytes} is more than half of the {free_mb} MB "
                                           f"free on {directory}: refusing to fill the disk")
    if state.disk_fill is not None:
        state.disk_fill.release()
    state.disk_fill = DiskFill(directory, p.rate, p.megabytes)
    return {"rate": p.rate, "megabytes": p.megabytes, "directory": str(directory),
            "seconds_to_limit": round(p.megabytes / p.rate, 1)}


# --- the table ----------------------------------------------------------------------------------------
Handler = Callable[[FaultState, ServedModel, Any], dict[str, Any]]

# One handler per fault kind; each takes that kind's parameter model (incidentd.model_server.fault_params).
HANDLERS: dict[FaultKind, Handler] = {
    FaultKind.NONFINITE_WEIGHTS: nonfinite_weights,
    FaultKind.EXPLODING_WEIGHTS: exploding_weights,
    FaultKind.STARVATION: start_starvation,
    FaultKind.HANG: start_hang,
    FaultKind.CRASH: schedule_crash,
    FaultKind.LATENCY: start_latency,
    FaultKind.NULL_FEATURES: start_null_features,
    FaultKind.INPUT_DRIFT: start_input_drift,
    FaultKind.UNIT_CHANGE: start_unit_change,
    FaultKind.UNSEEN_CATEGORIES: start_unseen_categories,
    FaultKind.LABEL_STALL: start_label_stall,
    FaultKind.CONCEPT_DRIFT: start_concept_drift,
    FaultKind.MEMORY_BALLOON: start_memory_balloon,
    FaultKind.MEMORY_LEAK: start_memory_leak,
    FaultKind.LATENCY_CREEP: start_latency_creep,
    FaultKind.DISK_FILL: start_disk_fill,
}


def apply_fault(kind: FaultKind, params: FaultParams, state: FaultState, served: ServedModel) -> dict[str, Any]:
    """Run ``kind``'s handler; returns what was done. Raises FaultParamError for a value the model refuses."""
    return HANDLERS[kind](state, served, params)
