"""The whole tree type-checks: `python -m mypy .` with the configuration in pyproject.toml ([tool.mypy]:
strict for detectors/, third-party libraries without type information ignored) reports no error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

def test_mypy_reports_no_error_on_the_whole_tree() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "mypy", "."], cwd=REPO, env=env,
                       capture_output=True, text=True, check=False, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
