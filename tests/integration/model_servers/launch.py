"""Start the third-party model servers of tests/integration/test_model_servers.py, each in its own venv.

``scripts/servers/install_model_servers.sh`` creates the venvs and writes the env file read here. Each
server gets free loopback ports and a temporary directory; :func:`stop` ends it (process group).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
ENV_FILE = Path(os.environ.get("INCIDENTD_MODEL_SERVERS_DIR", Path.home() / ".cache/incidentd/model-servers")) / (
    "model-servers.env"
)
START_TIMEOUT = float(os.environ.get("INCIDENTD_MODEL_SERVER_START_TIMEOUT", "180"))


class Unavailable(RuntimeError):
    """The server could not be installed or started; the message says why (with its log tail)."""


@dataclass
class Served:
    kind: str
    base_url: str  # inference endpoint
    metrics_url: str
    protocol: str  # "v2" (OIP), "v1" (KServe), "torchserve" (/predictions with v1-style bodies)
    model: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def infer_path(self) -> str:
        if self.protocol == "v2":
            return f"/v2/models/{self.model}/infer"
        if self.protocol == "v1":
            return f"/v1/models/{self.model}:predict"
        return f"/predictions/{self.model}"


def settings() -> dict[str, str]:
    out: dict[str, str] = {}
    if ENV_FILE.is_file():
        for line in ENV_FILE.read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v.strip()
    out.update({k: v for k, v in os.environ.items() if k.startswith("INCIDENTD_") and k.endswith(("_VENV", "_LIBDIR"))})
    return out


def venv(kind: str) -> Path:
    v = settings().get(f"INCIDENTD_{kind.upper()}_VENV")
    if not v or not (Path(v) / "bin/python").exists():
        raise Unavailable(f"{kind} is not installed (run scripts/servers/install_model_servers.sh {kind})")
    return Path(v)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(p: Path, n: int = 30) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, method: str = "GET") -> None:
    """Poll ``url`` until it answers 200 (the server is up), the process dies, or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited with {proc.returncode} before answering {url}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise Unavailable(f"no answer from {url} within {START_TIMEOUT:.0f} s:\n{_tail(log)}")


def _spawn(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    log = cwd / "server.log"
    fh = open(log, "wb")  # noqa: SIM115 - closed by the process' end
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTHONPATH", None)  # the server's venv, not our checkout
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    return proc, log


def stop(s: Served) -> None:
    if s.proc.poll() is None:
        try:
            os.killpg(s.proc.pid, signal.SIGTERM)
            s.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            s.proc.wait(timeout=10)
    if s.kind == "torchserve":
        stop_cmd = s.extra.get("stop")
        if stop_cmd:
            env = {**os.environ, **torchserve_tmp_env(s.workdir)}
            subprocess.run(stop_cmd.split(), cwd=s.workdir, env=env, capture_output=True, timeout=60, check=False)
    shutil.rmtree(s.workdir, ignore_errors=True)


def torchserve_tmp_env(workdir: Path) -> dict[str, str]:
    """A temp dir of this instance's own: ``torchserve`` keeps its ``.model_server.pid`` in
    ``tempfile.gettempdir()`` and refuses to start while another live instance's pid is there, so two
    instances in one pytest session (test_model_servers.py and test_server_executors.py) need separate ones."""
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"TMPDIR": str(tmp), "TEMP": str(tmp)}


def torchserve_grpc_config() -> list[str]:
    """Free loopback gRPC ports: TorchServe's defaults (7070/7071) clash when two instances run at once."""
    return [
        "grpc_inference_address=127.0.0.1",
        f"grpc_inference_port={free_port()}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={free_port()}",
    ]


def _copy_model_files(dest: Path) -> None:
    for name in ("tiny_model.py", "mlserver_runtime.py", "kserve_server.py", "torchserve_handler.py", "pytriton_server.py"):
        shutil.copy(HERE / name, dest / name)


def start_mlserver(workdir: Path) -> Served:
    py = venv("mlserver")
    http, grpc, metrics = free_port(), free_port(), free_port()
    model_dir = workdir / "tiny"
    model_dir.mkdir(parents=True)
    _copy_model_files(model_dir)
    (workdir / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": http,
                "grpc_port": grpc,
                "metrics_port": metrics,
                # MLServer 1.7's parallel worker pool dies with the current uvloop
                # ("There is no current event loop"); inference in the main process works.
                "parallel_workers": 0,
            }
        )
    )
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "tiny",
                "implementation": "mlserver_runtime.TinyModel",
                "parameters": {"version": "v1"},
                "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
                "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
            }
        )
    )
    proc, log = _spawn([str(py / "bin/mlserver"), "start", str(workdir)], workdir)
    s = Served("mlserver", f"http://127.0.0.1:{http}", f"http://127.0.0.1:{metrics}/metrics", "v2", "tiny", proc, workdir, log)
    try:
        _wait(f"{s.base_url}/v2/models/tiny/ready", proc, log)
    except Unavailable:
        stop(s)
        raise
    return s


def start_kserve(workdir: Path) -> Served:
    py = venv("kserve")
    http, grpc = free_port(), free_port()
    _copy_model_files(workdir)
    proc, log = _spawn(
        [str(py / "bin/python"), "kserve_server.py", "--http_port", str(http), "--grpc_port", str(grpc)], workdir
    )
    s = Served("kserve", f"http://127.0.0.1:{http}", f"http://127.0.0.1:{http}/metrics", "v1", "tiny", proc, workdir, log)
    try:
        _wait(f"{s.base_url}/v1/models/tiny", proc, log)
    except Unavailable:
        stop(s)
        raise
    return s


def start_torchserve(workdir: Path) -> Served:
    py = venv("torchserve")
    if shutil.which("java") is None:
        raise Unavailable("TorchServe needs Java (17+) on PATH")
    inf, mgmt, metrics = free_port(), free_port(), free_port()
    store = workdir / "model-store"
    store.mkdir()
    _copy_model_files(workdir)
    arch = subprocess.run(
        [
            str(py / "bin/torch-model-archiver"),
            "--model-name", "tiny",
            "--version", "1.0",
            "--handler", "torchserve_handler.py",
            "--extra-files", "tiny_model.py",
            "--export-path", str(store),
        ],
        cwd=workdir, capture_output=True, text=True, timeout=120, check=False,
    )
    if arch.returncode != 0:
        raise Unavailable(f"torch-model-archiver failed: {arch.stderr[-2000:]}")
    (workdir / "config.properties").write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{inf}",
                f"management_address=http://127.0.0.1:{mgmt}",
                f"metrics_address=http://127.0.0.1:{metrics}",
                *torchserve_grpc_config(),
                "metrics_mode=prometheus",
                "disable_token_authorization=true",
                "enable_envvars_config=false",
                "default_workers_per_model=1",
                f"model_store={store}",
                "load_models=tiny.mar",
                "install_py_dep_per_model=false",
            ]
        )
        + "\n"
    )
    env = {"PATH": f"{py}/bin:{os.environ.get('PATH', '')}", "TS_CONFIG_FILE": str(workdir / "config.properties"),
           **torchserve_tmp_env(workdir)}
    cmd = [str(py / "bin/torchserve"), "--start", "--foreground", "--ncs", "--ts-config", str(workdir / "config.properties"),
           "--model-store", str(store), "--disable-token-auth"]
    proc, log = _spawn(cmd, workdir, env)
    s = Served("torchserve", f"http://127.0.0.1:{inf}", f"http://127.0.0.1:{metrics}/metrics", "torchserve", "tiny",
               proc, workdir, log, extra={"stop": f"{py}/bin/torchserve --stop"})
    try:
        _wait(f"{s.base_url}/ping", proc, log)
        _wait(f"http://127.0.0.1:{mgmt}/models/tiny", proc, log)
        _wait_model_ready(f"http://127.0.0.1:{mgmt}/models/tiny", proc, log)
    except Unavailable:
        stop(s)
        raise
    return s


def _wait_model_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                d = json.loads(r.read())
            workers = d[0].get("workers", []) if isinstance(d, list) and d else []
            if any(w.get("status") == "READY" for w in workers):
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.25)
    raise Unavailable(f"model never READY at {url}:\n{_tail(log)}")


def start_pytriton(workdir: Path) -> Served:
    py = venv("pytriton")
    libdir = settings().get("INCIDENTD_PYTRITON_LIBDIR", "")
    http, grpc, metrics = free_port(), free_port(), free_port()
    _copy_model_files(workdir)
    env = {"LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}".strip(":")}
    proc, log = _spawn(
        [str(py / "bin/python"), "pytriton_server.py", str(http), str(grpc), str(metrics)], workdir, env
    )
    s = Served("triton", f"http://127.0.0.1:{http}", f"http://127.0.0.1:{metrics}/metrics", "v2", "tiny", proc, workdir, log)
    try:
        _wait(f"{s.base_url}/v2/models/tiny/ready", proc, log)
    except Unavailable:
        stop(s)
        raise
    return s


STARTERS = {
    "mlserver": start_mlserver,
    "kserve": start_kserve,
    "torchserve": start_torchserve,
    "triton": start_pytriton,
}

if __name__ == "__main__":  # manual check: python -m tests.integration.model_servers.launch KIND
    import tempfile

    kind = sys.argv[1]
    s = STARTERS[kind](Path(tempfile.mkdtemp(prefix=f"incidentd-{kind}-")))
    print(s.base_url, s.metrics_url)
    try:
        input("running; Enter stops it ")
    finally:
        stop(s)
