"""``incidentd registry add``: a checkpoint and a reference file become a version, or nothing is written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from incidentd.commands import registry as registry_cmd
from incidentd.model_server.model import build_model, default_arch, model_from_checkpoint
from remediation.registry import ModelRegistry

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """incidentd"""

    registry_cmd.register(app)
    return app


APP = _app()


def cli(*args: str) -> tuple[int, Any, str]:
    r = runner.invoke(APP, ["registry", *args])
    out = r.stdout.strip()
    try:
        data = json.loads(out) if out else None
    except ValueError:
        data = None
    return r.exit_code, data, r.output


def checkpoint(tmp_path: Path, name: str = "model.pt", **override: Any) -> Path:
    torch.manual_seed(0)
    arch = default_arch()
    model = build_model(arch)
    ckpt: dict[str, Any] = {"state_dict": model.state_dict(), "arch": arch, **override}
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def reference(tmp_path: Path, rows: int = 50, width: int = 64, **arrays: Any) -> Path:
    rng = np.random.default_rng(0)
    data = {"inputs": rng.integers(0, 17, (rows, width)).astype(np.float32),
            "predictions": rng.integers(0, 10, rows),
            "feature_names": np.array([f"px{i}" for i in range(width)]), **arrays}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "reference.npz"
    np.savez(path, **data)
    return path


def untouched(root: Path) -> bool:
    """Nothing written: not even the (new) registry directory."""
    return not root.exists()


def test_add_publishes_a_loadable_version_with_its_reference(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    code, out, text = cli("add", "--version", "v3", str(checkpoint(tmp_path)), "--reference",
                          str(reference(tmp_path)), "--registry", str(root), "--known-good")
    assert code == 0, text
    assert out["version"] == "v3" and out["known_good"] is True
    reg = ModelRegistry(root)
    assert reg.versions() == ["v3"] and reg.known_good() == "v3" and reg.current() is None
    model = model_from_checkpoint(reg.load("v3"))           # the model server can serve it
    assert model(torch.zeros(1, 64)).shape == (1, 10)
    ref = reg.reference("v3")
    assert ref.inputs.shape == (50, 64) and ref.predictions.shape == (50,)
    assert reg.metadata("v3")["feature_names"][:2] == ["px0", "px1"]
    code, listed, _ = cli("list", "--registry", str(root))
    assert code == 0 and listed == {"current": None, "known_good": "v3", "versions": ["v3"]}


def test_add_without_reference(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    code, _, text = cli("add", "--version", "v1", str(checkpoint(tmp_path)), "--registry", str(root))
    assert code == 0, text
    reg = ModelRegistry(root)
    assert reg.known_good() is None and reg.reference("v1").inputs.size == 0


@pytest.mark.parametrize("override, needle", [
    ({"arch": None}, "'arch' must be a dict"),
    ({"state_dict": {}}, "'state_dict' must be a non-empty dict"),
    ({"arch": {**default_arch(), "hidden": [32]}}, "'state_dict' does not fit 'arch'"),
    ({"arch": {"type": "mlp", "input_dim": 64}}, "'arch' lacks ['hidden', 'classes']"),
])
def test_bad_checkpoint_is_named_and_nothing_is_written(tmp_path: Path, override: dict[str, Any],
                                                        needle: str) -> None:
    root = tmp_path / "registry"
    path = checkpoint(tmp_path, **override)
    code, out, text = cli("add", "--version", "v3", str(path), "--registry", str(root))
    assert code == 2 and out is None and needle in text and str(path) in text, text
    assert untouched(root)


def test_checkpoint_missing_a_key(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": build_model(default_arch()).state_dict()}, path)
    code, _, text = cli("add", "--version", "v3", str(path), "--registry", str(tmp_path / "r"))
    assert code == 2 and "missing key(s) ['arch']" in text, text
    assert untouched(tmp_path / "r")


def test_damaged_weights_and_non_torch_files_are_refused(tmp_path: Path) -> None:
    model = build_model(default_arch())
    state = model.state_dict()
    state["net.0.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save({"state_dict": state, "arch": default_arch()}, bad)
    code, _, text = cli("add", "--version", "v3", str(bad), "--registry", str(tmp_path / "r"))
    assert code == 2 and "non-finite values in ['net.0.weight']" in text, text
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    code, _, text = cli("add", "--version", "v3", str(junk), "--registry", str(tmp_path / "r"))
    assert code == 2 and "not a torch checkpoint" in text, text
    code, _, text = cli("add", "--version", "v3", str(tmp_path / "absent.pt"), "--registry", str(tmp_path / "r"))
    assert code == 2 and "no such file" in text, text
    assert untouched(tmp_path / "r")


@pytest.mark.parametrize("arrays, needle", [
    ({"width": 10, "feature_names": None}, "'inputs' has 10 columns, the checkpoint's arch.input_dim is 64"),
    ({"predictions": np.zeros(3, np.int64)}, "'predictions' must be 50 integers"),
    ({"feature_names": np.array(["a", "b"])}, "'feature_names' must be 64 strings"),
    ({"inputs": None}, "missing array 'inputs'"),
    ({"labels": np.zeros(50)}, "unknown array(s) ['labels']"),
])
def test_bad_reference_is_named_and_nothing_is_written(tmp_path: Path, arrays: dict[str, Any],
                                                       needle: str) -> None:
    root = tmp_path / "registry"
    ref = reference(tmp_path, **arrays)
    code, _, text = cli("add", "--version", "v3", str(checkpoint(tmp_path)), "--reference", str(ref),
                        "--registry", str(root))
    assert code == 2 and needle in text and str(ref) in text, text
    assert untouched(root)


def test_versions_are_immutable_and_names_checked(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    ckpt = checkpoint(tmp_path)
    assert cli("add", "--version", "v3", str(ckpt), "--registry", str(root))[0] == 0
    sha = ModelRegistry(root).metadata("v3")["sha256"]
    code, _, text = cli("add", "--version", "v3", str(ckpt), "--registry", str(root))
    assert code == 2 and "model version 'v3' already exists" in text
    assert ModelRegistry(root).metadata("v3")["sha256"] == sha
    code, _, text = cli("add", "--version", "../v4", str(ckpt), "--registry", str(root))
    assert code == 2 and "invalid version name" in text
    assert ModelRegistry(root).versions() == ["v3"]
