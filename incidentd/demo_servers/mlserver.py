"""Run the demo's digits model on a real Seldon MLServer (``incidentd demo --server mlserver``).

MLServer runs from its own virtual environment (``scripts/servers/install_model_servers.sh mlserver``
makes it; its pins clash with ours), on loopback ports, with a model repository in the demo's workdir:

    <workdir>/mlserver/models/digits/v1/{model-settings.json, weights.npz, mlserver_digits.py}
    <workdir>/mlserver/models/digits/v2/{model-settings.json.disabled, ...}
    <workdir>/mlserver/reference/digits/v1.csv, v2.csv

Only the current version's settings are enabled. A deploy is what a user does: put the new version's
settings in place and ask MLServer to reload the model (``POST /v2/repository/models/digits/load``); it then
serves the newest version. incidentd's MLServer executor rolls back the same way, in reverse.

Faults that live inside the model instance go through the runtime's fault file (mlserver_digits.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from remediation.registry import ModelRegistry

RUNTIME = Path(__file__).with_name("mlserver_digits.py")
MODEL = "digits"
SETTINGS = "model-settings.json"
DISABLED = SETTINGS + ".disabled"
INSTALL = "scripts/servers/install_model_servers.sh mlserver"


class MLServerUnavailable(RuntimeError):
    """MLServer is not installed or did not start; the message says why and what to run."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_venv() -> Path:
    """MLServer's venv: $INCIDENTD_MLSERVER_VENV, else the one install_model_servers.sh recorded."""
    given = os.environ.get("INCIDENTD_MLSERVER_VENV")
    if not given:
        root = Path(os.environ.get("INCIDENTD_MODEL_SERVERS_DIR", Path.home() / ".cache/incidentd/model-servers"))
        env_file = root / "model-servers.env"
        if env_file.is_file():
            for line in env_file.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip() == "INCIDENTD_MLSERVER_VENV":
                    given = value.strip()
    if not given or not (Path(given) / "bin/mlserver").exists():
        raise MLServerUnavailable(f"MLServer is not installed (looked for INCIDENTD_MLSERVER_VENV and "
                                  f"~/.cache/incidentd/model-servers/model-servers.env): run {INSTALL}")
    return Path(given)


def export_weights(registry: ModelRegistry, version: str, dest: Path) -> None:
    """The registry checkpoint's MLP as numpy arrays (w0, b0, ..., fill, input_scale) for the runtime."""
    ckpt = registry.load(version)
    state = {k: v.detach().cpu().numpy() for k, v in ckpt["state_dict"].items()}
    linear = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("net.") and k.endswith(".weight")},
                    key=lambda k: int(k.split(".")[1]))
    arrays: dict[str, np.ndarray] = {"layers": np.asarray(len(linear)), "fill": state["fill"],
                                     "input_scale": np.asarray(float(ckpt["arch"].get("input_scale", 1.0)))}
    for i, name in enumerate(linear):
        arrays[f"w{i}"], arrays[f"b{i}"] = state[f"{name}.weight"], state[f"{name}.bias"]
    np.savez(dest, **arrays)   # type: ignore[arg-type]


class MLServerStack:
    """One MLServer serving ``digits`` from a repository built out of the demo's model registry."""

    def __init__(self, workdir: Path, registry: ModelRegistry, versions: tuple[str, ...] = ("v1", "v2"),
                 serving: str = "v1", start_timeout: float = 180.0) -> None:
        self.root = workdir / "mlserver"
        self.repository = self.root / "models"
        self.reference = self.root / "reference"
        self.fault_file = self.root / "fault.json"
        self.registry = registry
        self.versions = versions
        self.serving = serving
        self.start_timeout = start_timeout
        self.http_port, self.grpc_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "mlserver.log"

    # ------------------------------------------------------------------ repository

    def prepare(self) -> None:
        """Write the model repository (one folder per version) and the drift references."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.repository.mkdir(parents=True)
        (self.reference / MODEL).mkdir(parents=True)
        for v in self.versions:
            folder = self.repository / MODEL / v
            folder.mkdir(parents=True)
            shutil.copy(RUNTIME, folder / RUNTIME.name)
            export_weights(self.registry, v, folder / "weights.npz")
            settings = {
                "name": MODEL, "implementation": "mlserver_digits.DigitsModel",
                "parameters": {"version": v, "extra": {"fault_file": str(self.fault_file)}},
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
            }
            (folder / (SETTINGS if v == self.serving else DISABLED)).write_text(json.dumps(settings, indent=1))
            ref = self.registry.reference(v)
            cols = [f"pixels_{i}" for i in range(ref.inputs.shape[1])]
            table = np.column_stack([ref.inputs, ref.predictions]) if len(ref.predictions) else ref.inputs
            header = ",".join(cols + (["prediction"] if len(ref.predictions) else []))
            np.savetxt(self.reference / MODEL / f"{v}.csv", table, delimiter=",", header=header, comments="",
                       fmt="%.6g")
        (self.repository / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.http_port, "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port, "parallel_workers": 0, "load_models_at_startup": True,
            "debug": False}))

    # ------------------------------------------------------------------ process

    def start(self) -> None:
        venv = find_venv()
        self.prepare()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # MLServer's venv, not our checkout
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(venv / "bin/mlserver"), "start", str(self.repository)],
                                         cwd=self.root, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MLServerUnavailable(f"MLServer exited with {self.proc.returncode} during start:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise MLServerUnavailable(f"MLServer did not serve {MODEL} within {self.start_timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ what a user (or a fault) does

    def deploy(self, version: str) -> None:
        """Put ``version``'s settings in place and reload the model: MLServer then serves the newest."""
        folder = self.repository / MODEL / version
        if not folder.is_dir():
            raise ValueError(f"version {version} is not in the MLServer repository {self.repository / MODEL}")
        if (folder / DISABLED).exists():
            (folder / DISABLED).rename(folder / SETTINGS)
        r = httpx.post(f"{self.url}/v2/repository/models/{MODEL}/load", json={}, timeout=60.0)
        r.raise_for_status()

    def inject(self, fault: str, params: dict[str, Any]) -> None:
        """A fault inside the serving model instance (the runtime's fault file, written atomically)."""
        fd, tmp = tempfile.mkstemp(prefix=".fault-", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump({"fault": fault, "params": params, "at": time.time()}, f)
        os.replace(tmp, self.fault_file)

    def clear(self) -> None:
        """Ends the fault in the serving instance and deletes any disk ballast it wrote."""
        self.fault_file.unlink(missing_ok=True)
        shutil.rmtree(self.root / "ballast", ignore_errors=True)
