"""Weight clamp maths: repair from known-good, clamp into bounds, idempotence, accuracy restored."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from remediation.clamp import ClampReport, clamp_state, derive_bounds


def _good() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(20, 10, generator=g), "b": torch.linspace(-1, 1, 11), "step": torch.tensor(3)}


def _clone(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in s.items()}


def test_minmax_bounds_with_margin() -> None:
    b = derive_bounds({"b": torch.linspace(-1, 1, 11)}, method="minmax", margin=0.1)
    lo, hi = b["b"]
    assert math.isclose(lo, -1.2) and math.isclose(hi, 1.2)


def test_percentile_bounds_ignore_outliers() -> None:
    x = torch.cat([torch.linspace(-1, 1, 10_000), torch.tensor([50.0])])
    lo, hi = derive_bounds({"x": x}, method="percentile", percentile=99.0, margin=0.0)["x"]
    assert hi < 2.0 and lo > -1.0 - 1e-6
    with pytest.raises(ValueError):
        derive_bounds({"x": x}, method="percentile", percentile=20)
    with pytest.raises(ValueError):
        derive_bounds({"x": x}, method="nope")


def test_integer_tensors_are_skipped() -> None:
    assert "step" not in derive_bounds(_good())


def test_nonfinite_repaired_from_known_good_and_exploding_clamped() -> None:
    good = _good()
    live = _clone(good)
    live["a"][0, 0] = float("nan")
    live["a"][1, 1] = float("inf")
    live["a"][2, 2] = -float("inf")
    live["b"][3] = 1e6
    live["b"][4] = -1e6
    bounds = derive_bounds(good, margin=0.1)
    rep = clamp_state(live, good, bounds)
    assert isinstance(rep, ClampReport) and rep.changed
    by = {t.name: t for t in rep.tensors}
    assert by["a"].nonfinite_repaired == 3 and by["a"].clamped == 0
    assert by["b"].nonfinite_repaired == 0 and by["b"].clamped == 2
    assert torch.equal(live["a"], good["a"])          # repaired with the known-good value at the same index
    assert float(live["b"][3]) == pytest.approx(bounds["b"][1])
    assert float(live["b"][4]) == pytest.approx(bounds["b"][0])
    assert all(torch.isfinite(v).all() for v in live.values())


def test_idempotent_and_dry_run() -> None:
    good = _good()
    live = _clone(good)
    live["a"][5, 5] = float("nan")
    live["a"][6, 6] = 1e9
    bounds = derive_bounds(good)
    snapshot = _clone(live)
    dry = clamp_state(live, good, bounds, dry_run=True)
    assert dry.changed and dry.dry_run
    assert torch.equal(live["a"].nan_to_num(7.0), snapshot["a"].nan_to_num(7.0))   # nothing written
    assert clamp_state(live, good, bounds).changed
    after = _clone(live)
    second = clamp_state(live, good, bounds)
    assert not second.changed and second.total_repaired == 0 and second.total_clamped == 0
    assert all(torch.equal(after[k], live[k]) for k in live)


def test_in_place_on_live_module() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    x = torch.randn(5, 8)
    assert not torch.isfinite(model(x)).all()
    clamp_state(model.state_dict(), good, derive_bounds(good))
    assert torch.isfinite(model(x)).all()
    assert torch.equal(model.weight, good["weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_works_on_gpu() -> None:
    good = _good()
    live = {k: v.cuda() for k, v in _clone(good).items()}
    live["a"][0, 0] = float("nan")
    rep = clamp_state(live, good, derive_bounds(good))
    assert rep.total_repaired == 1 and live["a"].is_cuda and torch.equal(live["a"].cpu(), good["a"])


def test_accuracy_back_to_known_good_level(tmp_path) -> None:
    from incidentd.model_server.model import accuracy, load_digits_split, model_from_checkpoint, train_version
    from remediation.registry import ModelRegistry

    reg = ModelRegistry(tmp_path)
    meta = train_version(reg, "v1")
    good = reg.load("v1")
    model = model_from_checkpoint(good)
    split = load_digits_split()
    base = accuracy(model, split.x_holdout, split.y_holdout)
    assert base == pytest.approx(meta["holdout_accuracy"], abs=1e-3) and base > 0.93
    rng = np.random.default_rng(0)
    with torch.no_grad():
        net = model.net
        assert isinstance(net, torch.nn.Sequential)
        first, second = net[0], net[2]
        assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
        w = first.weight.view(-1)
        w[torch.as_tensor(rng.choice(w.numel(), 20, replace=False))] = float("nan")
        w2 = second.weight.view(-1)
        w2[torch.as_tensor(rng.choice(w2.numel(), 10, replace=False))] *= 1e4
    assert accuracy(model, split.x_holdout, split.y_holdout) < 0.5
    rep = clamp_state(model.state_dict(), good["state_dict"], derive_bounds(good["state_dict"]))
    assert rep.total_repaired == 20 and rep.total_clamped > 0
    assert accuracy(model, split.x_holdout, split.y_holdout) >= base - 0.1
