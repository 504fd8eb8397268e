"""Weight clamp: repair non-finite weights from the known-good version and clamp into known-good bounds.

Pure torch, in place on the live tensors, on whatever device they live on; applying it twice changes
nothing the second time.

    >>> bounds = derive_bounds(known_good_state, method="minmax", margin=0.1)
    >>> report = clamp_state(model.state_dict(), known_good_state, bounds)
    >>> report.changed, report.total_repaired, report.total_clamped
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["BoundsMethod", "ClampReport", "TensorClamp", "clamp_state", "derive_bounds"]


class BoundsMethod(enum.StrEnum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"


@dataclass(frozen=True, slots=True)
class TensorClamp:
    """What the clamp did (or would do) to one tensor."""

    name: str
    nonfinite_repaired: int
    clamped: int
    lower: float
    upper: float

    @property
    def changed(self) -> bool:
        return self.nonfinite_repaired > 0 or self.clamped > 0

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "nonfinite_repaired": self.nonfinite_repaired, "clamped": self.clamped,
                "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True, slots=True)
class ClampReport:
    """Per-tensor outcome of ``clamp_state``; ``changed`` is False when nothing needed repair."""

    tensors: tuple[TensorClamp, ...]
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(t.changed for t in self.tensors)

    @property
    def total_repaired(self) -> int:
        return sum(t.nonfinite_repaired for t in self.tensors)

    @property
    def total_clamped(self) -> int:
        return sum(t.clamped for t in self.tensors)

    def as_dict(self) -> dict[str, object]:
        return {"changed": self.changed, "dry_run": self.dry_run,
                "tensors": [t.as_dict() for t in self.tensors]}


def _float_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


def derive_bounds(known_good_state: Mapping[str, torch.Tensor], method: BoundsMethod | str = "minmax",
                  percentile: float = 99.9, margin: float = 0.1) -> dict[str, tuple[float, float]]:
    """Per-tensor ``(lo, hi)`` from the known-good weights, widened by ``margin`` times the range.

    ``minmax`` uses the tensor's min and max; ``percentile`` uses the (100-p, p) percentiles, so a few
    extreme known-good values do not set the bound.
    """
    method = BoundsMethod(method)
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    bounds: dict[str, tuple[float, float]] = {}
    for name, t in _float_tensors(known_good_state).items():
        x = t.detach().to("cpu", torch.float64).flatten()
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            bounds[name] = (0.0, 0.0)
            continue
        if method is BoundsMethod.MINMAX:
            lo, hi = float(x.min()), float(x.max())
        else:
            q = torch.tensor([(100.0 - percentile) / 100.0, percentile / 100.0], dtype=torch.float64)
            lo, hi = (float(v) for v in torch.quantile(x, q))
        width = max(hi - lo, abs(hi), abs(lo), 1e-12)
        bounds[name] = (lo - margin * width, hi + margin * width)
    return bounds


def clamp_state(state: Mapping[str, torch.Tensor], known_good_state: Mapping[str, torch.Tensor],
                bounds: Mapping[str, tuple[float, float]], dry_run: bool = False) -> ClampReport:
    """Repair non-finite values from the known-good tensor at the same index, then clamp into bounds.

    Works in place on ``state``'s tensors (pass ``model.state_dict()``: its tensors share storage with
    the live parameters). Tensors without bounds or without a same-shaped known-good tensor are only
    clamped where possible and otherwise reported unchanged. With ``dry_run`` nothing is written.
    """
    out: list[TensorClamp] = []
    with torch.no_grad():
        for name, t in _float_tensors(state).items():
            if name not in bounds:
                continue
            lo, hi = bounds[name]
            bad = ~torch.isfinite(t)
            n_bad = int(bad.sum())
            good = known_good_state.get(name)
            if n_bad and good is not None and good.shape == t.shape:
                fill = good.detach().to(device=t.device, dtype=t.dtype)
                # a known-good value that is itself non-finite falls back to the bound midpoint
                fill = torch.where(torch.isfinite(fill), fill, torch.full_like(fill, (lo + hi) / 2))
                repaired = torch.where(bad, fill, t)
            elif n_bad:
                repaired = torch.where(bad, torch.full_like(t, (lo + hi) / 2), t)
            else:
                repaired = t
            outside = (repaired < lo) | (repaired > hi)
            n_out = int(outside.sum())
            if not dry_run and (n_bad or n_out):
                t.copy_(repaired.clamp(min=lo, max=hi))
            out.append(TensorClamp(name, n_bad, n_out, float(lo), float(hi)))
    return ClampReport(tuple(out), dry_run=dry_run)
