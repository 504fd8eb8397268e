"""The codebase stays ruff-clean (rules in pyproject.toml) and keeps its layering."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Imports point downhill (DESIGN.md): incidentd -> remediation -> diagnosis -> detectors; collector ->
# detectors; nothing imports incidentd, detectors imports nothing of ours.
ALLOWED = {
    "detectors": set(),
    "collector": {"detectors"},
    "diagnosis": {"detectors"},
    "remediation": {"detectors", "diagnosis", "collector"},
}


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (it is in the dev extra)")
    r = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layering(package):
    ours = {"detectors", "collector", "diagnosis", "remediation", "incidentd"}
    bad = []
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top in ours and top != package and top not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(REPO)} imports {n}")
    assert not bad, "\n".join(bad)
