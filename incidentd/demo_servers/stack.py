"""What every third-party server the demo runs on shares: its venv, its process, the fault file, the drift
references and the numpy weights exported from the demo's model registry (demo and test code)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from remediation.registry import ModelRegistry

MODEL = "digits"
HOOK = Path(__file__).with_name("fault_hook.py")


class ServerUnavailable(RuntimeError):
    """The server is not installed or did not start; the message says why and what to run."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_setting(var: str) -> str:
    """``var`` from the environment, else from the env file install_model_servers.sh writes ("" if neither)."""
    given = os.environ.get(var)
    if given:
        return given
    root = Path(os.environ.get("INCIDENTD_MODEL_SERVERS_DIR", Path.home() / ".cache/incidentd/model-servers"))
    env_file = root / "model-servers.env"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == var:
                return value.strip()
    return ""


def find_venv(kind: str, executable: str) -> Path:
    """The server's venv: $INCIDENTD_<KIND>_VENV, else the one install_model_servers.sh recorded."""
    var = f"INCIDENTD_{kind.upper()}_VENV"
    given = venv_setting(var)
    if not given or not (Path(given) / "bin" / executable).exists():
        raise ServerUnavailable(f"{kind} is not installed (looked for {var} and ~/.cache/incidentd/model-servers/"
                                f"model-servers.env): run scripts/servers/install_model_servers.sh {kind}")
    return Path(given)


def export_weights(registry: ModelRegistry, version: str, dest: Path) -> None:
    """The registry checkpoint's MLP as numpy arrays (w0, b0, ..., fill, input_scale) for fault_hook.DigitsMLP."""
    ckpt = registry.load(version)
    state = {k: v.detach().cpu().numpy() for k, v in ckpt["state_dict"].items()}
    linear = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("net.") and k.endswith(".weight")},
                    key=lambda k: int(k.split(".")[1]))
    arrays: dict[str, np.ndarray] = {"layers": np.asarray(len(linear)), "fill": state["fill"],
                                     "input_scale": np.asarray(float(ckpt["arch"].get("input_scale", 1.0)))}
    for i, name in enumerate(linear):
        arrays[f"w{i}"], arrays[f"b{i}"] = state[f"{name}.weight"], state[f"{name}.bias"]
    np.savez(dest, **arrays)   # type: ignore[arg-type]


class ServerStack(ABC):
    """One third-party server serving ``digits`` v1 (and v2, the bad release, for the deploy fault)."""

    kind: str
    traffic_protocol: str          # how the demo's clients call it: "oip" or "v1" (KServe v1 bodies)
    feature_prefix: str            # the drift references' column names: <prefix>0 ... <prefix>63

    def __init__(self, workdir: Path, registry: ModelRegistry, versions: tuple[str, ...] = ("v1", "v2"),
                 serving: str = "v1", start_timeout: float = 180.0) -> None:
        self.root = workdir / self.kind
        self.reference = self.root / "reference"
        self.fault_file = self.root / "fault.json"
        self.registry = registry
        self.versions = versions
        self.serving = serving
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / f"{self.kind}.log"

    # ------------------------------------------------------------------ what the demo needs to know

    url: str                       # where inference requests go (the sidecar's --target and --upstream)
    metrics_url: str               # its Prometheus endpoint

    @abstractmethod
    def executor(self) -> dict[str, Any]:
        """incidentd's remediation.executor settings for this server."""

    def server_version(self, version: str) -> str:
        """The registry's version as the server names it (its metrics' version label, reference file names)."""
        return version

    def memory_limit_bytes(self) -> float | None:
        """A memory limit the service should judge leaks against, when the server exports none."""
        return None

    # ------------------------------------------------------------------ process

    @abstractmethod
    def prepare(self) -> None:
        """Write the server's model repository or archives (``start`` writes the drift references)."""

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and extra environment."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether the server serves the model (both versions loaded where it keeps both)."""

    def start(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.prepare()
        self.write_references()
        cmd, extra = self.command()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the server's venv, not our checkout
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                         env={**env, **extra}, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(f"{self.kind} exited with {self.proc.returncode} during start:\n{self.tail()}")
            try:
                if self.ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise ServerUnavailable(f"{self.kind} did not serve {MODEL} within {self.start_timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ files

    def write_references(self) -> None:
        """Per version, the training inputs and that version's predictions, named as the server names them."""
        (self.reference / MODEL).mkdir(parents=True, exist_ok=True)
        for v in self.versions:
            ref = self.registry.reference(v)
            cols = [f"{self.feature_prefix}{i}" for i in range(ref.inputs.shape[1])]
            table = np.column_stack([ref.inputs, ref.predictions]) if len(ref.predictions) else ref.inputs
            header = ",".join(cols + (["prediction"] if len(ref.predictions) else []))
            np.savetxt(self.reference / MODEL / f"{self.server_version(v)}.csv", table, delimiter=",", header=header, comments="",
                       fmt="%.6g")

    # ------------------------------------------------------------------ what a user (or a fault) does

    @abstractmethod
    def deploy(self, version: str) -> None:
        """Make ``version`` the one that serves, the way a user of this server would."""

    def inject(self, fault: str, params: dict[str, Any]) -> None:
        """A fault inside the serving model instance (fault_hook's fault file, written atomically)."""
        fd, tmp = tempfile.mkstemp(prefix=".fault-", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump({"fault": fault, "params": params, "at": time.time()}, f)
        os.replace(tmp, self.fault_file)

    def clear(self) -> None:
        """Ends the fault in the serving instance and deletes any disk ballast it wrote."""
        self.fault_file.unlink(missing_ok=True)
        shutil.rmtree(self.root / "ballast", ignore_errors=True)
