"""The codebase stays ruff-clean (rules in pyproject.toml) and keeps its import layers (import-linter
contracts in pyproject.toml: layers, independence inside collector/, no cycles inside a package)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.skip(f"{name} not installed (it is in the dev extra)")
    return path


def test_ruff_clean():
    r = subprocess.run([_tool("ruff"), "check", str(REPO)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:]


def test_contracts_cover_every_package_and_the_layers():
    ids = {c["id"] for c in CONTRACTS}
    assert {f"no-cycles-{p}" for p in ("detectors", "collector", "diagnosis", "remediation", "incidentd")} <= ids
    layers = [c["layers"] for c in CONTRACTS if c["type"] == "layers"]
    assert ["incidentd", "remediation", "diagnosis", "detectors"] in layers
    assert ["incidentd", "collector", "detectors"] in layers


@pytest.mark.parametrize("contract", [c["id"] for c in CONTRACTS])
def test_import_contract_kept(contract: str):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([_tool("lint-imports"), "--no-cache", "--contract", contract], cwd=REPO, env=env,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
