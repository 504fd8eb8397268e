"""Run the demo's digits model on a real TorchServe (``incidentd demo --server torchserve``).

TorchServe runs from its own virtual environment (``scripts/servers/install_model_servers.sh torchserve``;
it needs Java 17+ on PATH), on loopback ports, with both versions of ``digits`` registered from archives
made by ``torch-model-archiver``:

    <workdir>/torchserve/model-store/digits-v1.mar, digits-v2.mar
    <workdir>/torchserve/reference/digits/v1.csv, v2.csv

v1 is the default version. A deploy is what a user does: ``PUT /models/digits/v2/set-default`` on the
management API; unversioned requests then go to v2. incidentd's TorchServe executor rolls back with
set-default to the known-good version and restarts by scaling the default version's workers to 0 and back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
)

HANDLER = Path(__file__).with_name("torchserve_digits.py")


class TorchServeStack(ServerStack):
    """One TorchServe with ``digits`` v1 (default) and v2 registered, one worker each."""

    kind = "torchserve"
    traffic_protocol = "v1"
    feature_prefix = "f"          # no model metadata: the sidecar names the features f0..f63

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("start_timeout", 240.0)
        super().__init__(*args, **kw)
        self.store = self.root / "model-store"
        self.inference_port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.inference_port}"
        self.management_url = f"http://127.0.0.1:{self.management_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.venv = find_venv("torchserve", "torchserve")

    def executor(self) -> dict[str, Any]:
        return {"kind": "torchserve", "url": self.management_url, "model": MODEL, "known_good": self.serving,
                "ready_timeout_seconds": 120}

    def prepare(self) -> None:
        if shutil.which("java") is None:
            raise ServerUnavailable("TorchServe needs Java 17+ on PATH")
        self.store.mkdir(parents=True)
        for v in self.versions:
            build = self.root / "build" / v
            build.mkdir(parents=True)
            shutil.copy(HANDLER, build / HANDLER.name)
            shutil.copy(HOOK, build / HOOK.name)
            export_weights(self.registry, v, build / "weights.npz")
            (build / "hook.json").write_text(json.dumps({"fault_file": str(self.fault_file)}))
            out = build / "out"
            out.mkdir()
            r = subprocess.run([str(self.venv / "bin/torch-model-archiver"), "--model-name", MODEL, "--version", v,
                                "--handler", HANDLER.name, "--extra-files", "fault_hook.py,weights.npz,hook.json",
                                "--export-path", str(out)], cwd=build, capture_output=True, text=True, timeout=120,
                               check=False)
            if r.returncode != 0:
                raise ServerUnavailable(f"torch-model-archiver failed for {v}: {r.stderr[-2000:]}")
            (out / f"{MODEL}.mar").rename(self.store / f"{MODEL}-{v}.mar")
        tmp = self.root / "tmp"      # TorchServe keeps its pid file in the temp dir: one of its own
        tmp.mkdir()
        (self.root / "config.properties").write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.inference_port}",
            f"management_address={self.management_url}",
            f"metrics_address=http://127.0.0.1:{self.metrics_port}",
            "grpc_inference_address=127.0.0.1", f"grpc_inference_port={free_port()}",
            "grpc_management_address=127.0.0.1", f"grpc_management_port={free_port()}",
            "metrics_mode=prometheus", "disable_token_authorization=true", "enable_envvars_config=false",
            "default_workers_per_model=1", f"model_store={self.store}", "install_py_dep_per_model=false",
            "load_models=" + ",".join(f"{MODEL}-{v}.mar" for v in self.versions),
        ]) + "\n")

    def command(self) -> tuple[list[str], dict[str, str]]:
        cfg = self.root / "config.properties"
        tmp = str(self.root / "tmp")
        return ([str(self.venv / "bin/torchserve"), "--start", "--foreground", "--ncs", "--ts-config", str(cfg),
                 "--model-store", str(self.store), "--disable-token-auth"],
                {"PATH": f"{self.venv}/bin:{os.environ.get('PATH', '')}", "TS_CONFIG_FILE": str(cfg), "TMPDIR": tmp,
                 "TEMP": tmp})

    def ready(self) -> bool:
        r = httpx.get(f"{self.management_url}/models/{MODEL}/all", timeout=2.0)
        if r.status_code != 200:
            return False
        described = r.json()
        loaded = {d.get("modelVersion"): d for d in described}
        return all(v in loaded and any(w.get("status") == "READY" for w in loaded[v].get("workers") or [])
                   for v in self.versions)

    def start(self) -> None:
        super().start()
        self.deploy(self.serving)    # whichever version registered first is the default: make it v1

    def deploy(self, version: str) -> None:
        """``set-default``: unversioned requests go to ``version`` from now on."""
        r = httpx.put(f"{self.management_url}/models/{MODEL}/{version}/set-default", timeout=30.0)
        r.raise_for_status()

    def stop(self) -> None:
        super().stop()
        tmp = str(self.root / "tmp")
        subprocess.run([str(self.venv / "bin/torchserve"), "--stop"],
                       env={"PATH": os.environ.get("PATH", ""), "TMPDIR": tmp, "TEMP": tmp},
                       capture_output=True, timeout=60, check=False)
