"""Run the demo's digits model on a real NVIDIA Triton Inference Server (``incidentd demo --server triton``).

The ``tritonserver`` binary is the one PyTriton ships (``scripts/servers/install_model_servers.sh pytriton``
makes its venv, on Python 3.12: the Python backend's stub needs ``libpython3.12.so``, found through
``LD_LIBRARY_PATH``). It runs on loopback ports in explicit model-control mode, with a model repository in
the demo's workdir:

    <workdir>/triton/repository/digits/config.pbtxt      version_policy: {specific: {versions: [1]}}
    <workdir>/triton/repository/digits/1/{model.py, fault_hook.py, weights.npz, hook.json}
    <workdir>/triton/repository/digits/2/...              the bad release, not loaded at start
    <workdir>/triton/reference/digits/1.csv, 2.csv

Triton's versions are integers: the registry's v1 and v2 are Triton's 1 and 2. A deploy is what a user
does: the configuration's version policy set to the new version and ``POST /v2/repository/models/digits/load``.
incidentd's Triton executor rolls back the same way, to the known-good version, and restarts by unloading
and loading the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx

from incidentd.demo_servers.stack import (
    HOOK,
    MODEL,
    ServerStack,
    ServerUnavailable,
    export_weights,
    find_venv,
    free_port,
    venv_setting,
)

MODEL_PY = Path(__file__).with_name("triton_digits.py")
STUB_PYTHON = "3.12"      # the Python-backend stub PyTriton ships for the venv's Python
CONFIG = """name: "digits"
backend: "python"
max_batch_size: 64
input [ {{ name: "pixels" data_type: TYPE_FP32 dims: [ 64 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 10 ] }} ]
version_policy: {{ specific: {{ versions: [ {version} ] }} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def triton_version(version: str) -> str:
    """The registry's ``v2`` as Triton's version 2 (Triton's versions are integers)."""
    return re.sub(r"^v", "", version)


class TritonStack(ServerStack):
    """One tritonserver serving ``digits``, one version at a time, from a repository in the workdir."""

    kind = "triton"
    traffic_protocol = "oip"
    feature_prefix = "pixels_"    # the input tensor "pixels" ([-1, 64]) in the model's metadata

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.repository = self.root / "repository"
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.venv = find_venv("pytriton", "python")
        site = next(self.venv.glob("lib/python3*/site-packages"), None)
        if site is None or not (site / "pytriton/tritonserver/bin/tritonserver").exists():
            raise ServerUnavailable(f"the pytriton venv {self.venv} has no tritonserver binary: run "
                                    "scripts/servers/install_model_servers.sh pytriton")
        self.site = site

    def server_version(self, version: str) -> str:
        return triton_version(version)

    def executor(self) -> dict[str, Any]:
        return {"kind": "triton", "url": self.url, "model": MODEL, "known_good": triton_version(self.serving),
                "ready_timeout_seconds": 60}

    def prepare(self) -> None:
        """tritonserver with the Python backend's stub for the venv's Python, and the model repository."""
        shipped = self.site / "pytriton/tritonserver"
        self.server_dir = self.root / "tritonserver"
        shutil.copytree(shipped, self.server_dir, ignore=shutil.ignore_patterns("python_backend_stubs"))
        shutil.copy(shipped / f"python_backend_stubs/{STUB_PYTHON}/triton_python_backend_stub",
                    self.server_dir / "backends/python/triton_python_backend_stub")
        for v in self.versions:
            folder = self.repository / MODEL / triton_version(v)
            folder.mkdir(parents=True)
            shutil.copy(MODEL_PY, folder / "model.py")
            shutil.copy(HOOK, folder / HOOK.name)
            export_weights(self.registry, v, folder / "weights.npz")
            (folder / "hook.json").write_text(json.dumps({"fault_file": str(self.fault_file)}))
        self._write_config(self.serving)

    def _write_config(self, version: str) -> None:
        (self.repository / MODEL / "config.pbtxt").write_text(CONFIG.format(version=triton_version(version)))

    def command(self) -> tuple[list[str], dict[str, str]]:
        libs = [str(self.site / "nvidia_pytriton.libs"), venv_setting("INCIDENTD_PYTRITON_LIBDIR"),
                os.environ.get("LD_LIBRARY_PATH", "")]
        return ([str(self.server_dir / "bin/tritonserver"), f"--model-repository={self.repository}",
                 "--model-control-mode=explicit", f"--load-model={MODEL}",
                 f"--backend-directory={self.server_dir / 'backends'}", "--http-address=127.0.0.1",
                 f"--http-port={self.http_port}", "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                 f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false", "--log-verbose=0"],
                {"LD_LIBRARY_PATH": ":".join(p for p in libs if p),
                 "PATH": f"{self.venv}/bin:{os.environ.get('PATH', '')}"})

    def ready(self) -> bool:
        path = f"/v2/models/{MODEL}/versions/{triton_version(self.serving)}/ready"
        return httpx.get(self.url + path, timeout=2.0).status_code == 200

    def deploy(self, version: str) -> None:
        """The configuration's version policy set to ``version``, and the model loaded again from it."""
        if not (self.repository / MODEL / triton_version(version)).is_dir():
            raise ValueError(f"version {version} is not in the Triton repository {self.repository / MODEL}")
        self._write_config(version)
        r = httpx.post(f"{self.url}/v2/repository/models/{MODEL}/load", json={}, timeout=120.0)
        r.raise_for_status()
