"""ModelRegistry: publish, switch, known-good, checksum verification, unknown versions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.errors import IncidentdError
from remediation.registry import CorruptCheckpoint, ModelRegistry, UnknownVersion, VersionExists


def _state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"state_dict": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(4)}, "arch": {"type": "toy"}}


@pytest.fixture()
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "reg")


def test_empty_registry(reg: ModelRegistry) -> None:
    assert reg.versions() == [] and reg.current() is None and reg.known_good() is None
    assert reg.root.is_absolute()


def test_relative_root_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = ModelRegistry(Path("rel"))
    assert r.root == (tmp_path / "rel").resolve()


def test_publish_writes_layout_and_checksum(reg: ModelRegistry) -> None:
    x = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    meta = reg.publish("v1", _state(), {"arch": {"type": "toy"}, "holdout_accuracy": 0.9}, x, np.arange(5))
    d = reg.path("v1")
    assert d == reg.root / "versions" / "v1" and d.is_absolute()
    assert {p.name for p in d.iterdir()} == {"model.pt", "metadata.json", "reference.npz"}
    stored = json.loads((d / "metadata.json").read_text())
    assert stored["sha256"] == meta["sha256"] and len(meta["sha256"]) == 64
    assert stored["version"] == "v1" and "created" in stored and stored["parent"] is None
    assert not [p for p in (reg.root / "versions").iterdir() if p.name.startswith(".")]  # no temp dirs left
    ckpt = reg.load("v1")
    assert torch.equal(ckpt["state_dict"]["w"], _state()["state_dict"]["w"])
    ref = reg.reference("v1")
    np.testing.assert_array_equal(ref.inputs, x)
    np.testing.assert_array_equal(ref.predictions, np.arange(5))


def test_versions_are_immutable(reg: ModelRegistry) -> None:
    reg.publish("v1", _state(), {})
    with pytest.raises(VersionExists):
        reg.publish("v1", _state(1), {})
    with pytest.raises(ValueError):
        reg.publish("../evil", _state(), {})


def test_switch_is_atomic_symlink_and_idempotent(reg: ModelRegistry) -> None:
    reg.publish("v1", _state(), {})
    reg.publish("v2", _state(1), {})
    first = reg.switch("v1")
    assert first.changed and first.previous is None and reg.current() == "v1"
    assert reg.current_link.is_symlink()
    assert reg.current_link.resolve() == reg.path("v1")
    second = reg.switch("v2")
    assert second.changed and second.previous == "v1" and reg.current() == "v2"
    again = reg.switch("v2")
    assert not again.changed and "already current" in again.message
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".current")]
    assert reg.versions() == ["v1", "v2"]


def test_known_good(reg: ModelRegistry) -> None:
    reg.publish("v1", _state(), {})
    reg.mark_known_good("v1")
    assert reg.known_good() == "v1"
    with pytest.raises(UnknownVersion):
        reg.mark_known_good("v7")
    assert reg.known_good() == "v1"


def test_unknown_version(reg: ModelRegistry) -> None:
    reg.publish("v1", _state(), {})
    for call in (reg.load, reg.switch, reg.metadata, reg.path, reg.reference):
        with pytest.raises(UnknownVersion) as e:
            call("v9")
        assert isinstance(e.value, IncidentdError)
        assert e.value.version == "v9"
    with pytest.raises(UnknownVersion) as e:
        reg.load("v9")
    assert e.value.known == ["v1"]


def test_corruption_detected(reg: ModelRegistry) -> None:
    reg.publish("v1", _state(), {})
    reg.switch("v1")
    model = reg.path("v1") / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(model, 0o644)
    model.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint) as e:
        reg.load("v1")
    assert isinstance(e.value, IncidentdError)
    assert e.value.path == str(model) and "sha256" in e.value.reason


def test_missing_checkpoint_is_corrupt(reg: ModelRegistry) -> None:
    reg.publish("v1", _state(), {})
    (reg.path("v1") / "model.pt").unlink()
    with pytest.raises(CorruptCheckpoint) as e:
        reg.load("v1")
    assert "model.pt" in e.value.path
