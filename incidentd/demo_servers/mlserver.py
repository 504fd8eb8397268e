"""Run the demo's digits model on a real Seldon MLServer (``incidentd demo --server mlserver``).

MLServer runs from its own virtual environment (``scripts/servers/install_model_servers.sh mlserver``
makes it; its pins clash with ours), on loopback ports, with a model repository in the demo's workdir:

    <workdir>/mlserver/models/digits/v1/{model-settings.json, weights.npz, mlserver_digits.py, fault_hook.py}
    <workdir>/mlserver/models/digits/v2/{model-settings.json.disabled, ...}
    <workdir>/mlserver/reference/digits/v1.csv, v2.csv

Only the current version's settings are enabled. A deploy is what a user does: put the new version's
settings in place and ask MLServer to reload the model (``POST /v2/repository/models/digits/load``); it then
serves the newest version. incidentd's MLServer executor rolls back the same way, in reverse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx

from incidentd.demo_servers.stack import HOOK, MODEL, ServerStack, export_weights, find_venv, free_port

RUNTIME = Path(__file__).with_name("mlserver_digits.py")
SETTINGS = "model-settings.json"
DISABLED = SETTINGS + ".disabled"
# MLServer exports no memory limit; a container would set one, and a leak is judged against it.
MEMORY_LIMIT = 2**30


class MLServerStack(ServerStack):
    """One MLServer serving ``digits`` from a repository built out of the demo's model registry."""

    kind = "mlserver"
    traffic_protocol = "oip"
    feature_prefix = "pixels_"    # the input tensor "pixels" of shape [-1, 64] in the model's metadata

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.repository = self.root / "models"
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.venv = find_venv("mlserver", "mlserver")

    def executor(self) -> dict[str, Any]:
        return {"kind": "mlserver", "url": self.url, "model": MODEL, "repository_dir": str(self.repository),
                "known_good": self.serving, "ready_timeout_seconds": 60}

    def memory_limit_bytes(self) -> float | None:
        return MEMORY_LIMIT

    def prepare(self) -> None:
        """The model repository: one folder per version, only the serving one's settings enabled."""
        for v in self.versions:
            folder = self.repository / MODEL / v
            folder.mkdir(parents=True)
            shutil.copy(RUNTIME, folder / RUNTIME.name)
            shutil.copy(HOOK, folder / HOOK.name)
            export_weights(self.registry, v, folder / "weights.npz")
            settings = {
                "name": MODEL, "implementation": "mlserver_digits.DigitsModel",
                "parameters": {"version": v, "extra": {"fault_file": str(self.fault_file)}},
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
            }
            (folder / (SETTINGS if v == self.serving else DISABLED)).write_text(json.dumps(settings, indent=1))
        (self.repository / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.http_port, "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port, "parallel_workers": 0, "load_models_at_startup": True,
            "debug": False}))

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [str(self.venv / "bin/mlserver"), "start", str(self.repository)], {}

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=2.0).status_code == 200

    def deploy(self, version: str) -> None:
        """Put ``version``'s settings in place and reload the model: MLServer then serves the newest."""
        folder = self.repository / MODEL / version
        if not folder.is_dir():
            raise ValueError(f"version {version} is not in the MLServer repository {self.repository / MODEL}")
        if (folder / DISABLED).exists():
            (folder / DISABLED).rename(folder / SETTINGS)
        r = httpx.post(f"{self.url}/v2/repository/models/{MODEL}/load", json={}, timeout=60.0)
        r.raise_for_status()
