"""Shared fixtures: one trained registry per session (v1 good, v2 shuffled labels), copied per use."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def template_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from incidentd.model_server.model import train_version
    from remediation.registry import ModelRegistry

    root = tmp_path_factory.mktemp("template") / "registry"
    reg = ModelRegistry(root)
    train_version(reg, "v1", mark_known_good=True, make_current=True)
    train_version(reg, "v2", shuffle_labels=True, parent="v1")
    return root


@pytest.fixture()
def registry_dir(template_registry: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "registry"
    shutil.copytree(template_registry, dst, symlinks=True)
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen
    registry: Path
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def supervised_server(registry: Path, log: Path) -> tuple[object, str]:
    """A model server as embedded mode runs it: a LocalProcess the caller starts and stops; (process, url)."""
    from remediation.executors import LocalProcess

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = LocalProcess([sys.executable, "-m", "incidentd.model_server", "--registry", str(registry), "--port",
                         str(port), "--log-level", "warning", "--device", "cpu"], url + "/healthz", log)
    return proc, url


def start_server(registry: Path, port: int | None = None, faults: bool = True, timeout: float = 60) -> LiveServer:
    port = port or free_port()
    cmd = [sys.executable, "-m", "incidentd.model_server", "--registry", str(registry), "--port", str(port),
           "--log-level", "warning", "--device", "cpu"]
    if faults:
        cmd.append("--enable-fault-injection")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return LiveServer(url, proc, registry, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("model server did not start")


@pytest.fixture(scope="module")
def live_server(template_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    dst = tmp_path_factory.mktemp("live") / "registry"
    shutil.copytree(template_registry, dst, symlinks=True)
    server = start_server(dst)
    yield server
    server.stop()
