"""diagnosis/ and remediation/ pass mypy --strict (the per-module overrides in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_diagnosis_and_remediation_are_mypy_strict_clean() -> None:
    # Modules these import from other packages are followed normally: an error there fails this test too.
    r = subprocess.run([sys.executable, "-m", "mypy", "diagnosis", "remediation"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"mypy found problems:\n{r.stdout}\n{r.stderr}"
