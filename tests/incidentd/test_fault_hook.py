"""The demo's fault hook inside third-party servers (incidentd/demo_servers/fault_hook.py): a fault lives in
the model instance it was injected into, so the server's reload (incidentd's restart) ends it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from incidentd.demo_servers.fault_hook import DigitsMLP, FaultState
from incidentd.demo_servers.stack import export_weights
from incidentd.model_server.model import load_digits_split, model_from_checkpoint, predict_logits
from remediation.registry import ModelRegistry
from tests.model_server.conftest import template_registry  # noqa: F401  (session fixture)


def write(path: Path, fault: str, params: dict, at: float) -> None:
    path.write_text(json.dumps({"fault": fault, "params": params, "at": at}))


def test_a_fault_lives_in_its_instance_and_a_reload_ends_it(tmp_path: Path) -> None:
    path = tmp_path / "fault.json"
    t0 = 1000.0                                        # load and injection times as the clock would give them
    before = FaultState(str(path), loaded_at=t0)
    write(path, "memory_balloon", {"megabytes": 8, "step_megabytes": 4, "interval_seconds": 0.0}, t0 + 1)
    assert before.refresh()["fault"] == "memory_balloon"
    before._spinners[0].join(5)
    assert sum(len(b) for b in before._held) == 8 * 2**20             # grew to its size, pages written
    after = FaultState(str(path), loaded_at=t0 + 2)                   # the instance a reload makes
    assert after.refresh() == {}                                      # injected before this load: gone
    before.stop()
    assert before._held == []                                         # unload frees what it held
    path.unlink()
    assert before.refresh() == {}                                     # cleared


def test_latency_faults_add_their_delay(tmp_path: Path) -> None:
    path = tmp_path / "fault.json"
    write(path, "latency_creep", {"ramp": 1.0, "max_seconds": 0.25}, 0.0)   # long ago: grown past its cap
    creep = FaultState(str(path), loaded_at=-1.0)
    creep.refresh()
    assert creep.added_latency() == 0.25
    write(path, "latency", {"seconds": 0.3}, 1.0)
    assert creep.refresh()["fault"] == "latency" and creep.added_latency() == 0.3


def test_the_numpy_mlp_predicts_what_the_registry_checkpoint_predicts(template_registry: Path,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    reg = ModelRegistry(template_registry)
    for version in ("v1", "v2"):
        export_weights(reg, version, tmp_path / f"{version}.npz")
        x = load_digits_split().x_holdout[:50].copy()
        x[0, 3] = np.nan                                              # imputed the same way
        ours = DigitsMLP(tmp_path / f"{version}.npz").logits(x)
        theirs = predict_logits(model_from_checkpoint(reg.load(version)), x)
        assert np.allclose(ours, theirs, atol=1e-4)
        assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()
