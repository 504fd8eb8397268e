"""Real servers for the integration tests, started once per session on free loopback ports.

``scripts/servers/install.sh`` installs them and writes ``servers.env``; this file reads it
(``INCIDENTD_SERVERS_ENV`` names another one, and ``INCIDENTD_*`` environment variables win over
it). Every server gets a temporary data directory and is stopped at the end of the session.

With ``CI=true`` a server that cannot be found or started fails the test that needs it; without
CI it skips with the reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"

_ENV_CANDIDATES = [
    os.environ.get("INCIDENTD_SERVERS_ENV", ""),
    "/opt/incidentd-servers/servers.env",
    str(Path.home() / ".cache/incidentd/servers/servers.env"),
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """A server cannot be had: a failure under CI, a skip elsewhere."""
    if in_ci():
        pytest.fail(f"integration server unavailable (CI=true): {reason}", pytrace=False)
    pytest.skip(reason)


def server_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for cand in _ENV_CANDIDATES:
        if cand and Path(cand).is_file():
            for line in Path(cand).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    settings[k] = v
            break
    settings.update({k: v for k, v in os.environ.items() if k.startswith("INCIDENTD_")})
    return settings


def binary(settings: dict[str, str], key: str, default: str) -> str | None:
    path = settings.get(key) or shutil.which(default)
    return path if path and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 5.0,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return True
        time.sleep(interval)
    return False


class Server:
    """One server process we started, with its log file."""

    def __init__(self, name: str, argv: list[str], workdir: Path, *, env: dict[str, str] | None = None,
                 user: str | None = None, ready: Callable[[], bool], ready_timeout: float = 60.0) -> None:
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.env = env
        self.user = user
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        kwargs: dict[str, Any] = {}
        if self.user is not None and os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True, **kwargs)
        log.close()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if self.ready():
                    return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {self.ready_timeout:.0f}s: {self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _tempdir(prefix: str, owner: str | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if owner is not None and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def _chown_tree(path: Path, owner: str) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(owner)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


@pytest.fixture(scope="session")
def servers_settings() -> dict[str, str]:
    return server_settings()


@pytest.fixture(scope="session")
def promtool(servers_settings: dict[str, str]) -> str:
    path = binary(servers_settings, "INCIDENTD_PROMTOOL_BIN", "promtool")
    if path is None:
        unavailable("promtool not found: run scripts/servers/install.sh")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def amtool(servers_settings: dict[str, str]) -> str:
    path = binary(servers_settings, "INCIDENTD_AMTOOL_BIN", "amtool")
    if path is None:
        unavailable("amtool not found: run scripts/servers/install.sh")
    return path  # type: ignore[return-value]


# --- Prometheus -----------------------------------------------------------------------------

class PrometheusServer(Server):
    """Prometheus with a rewritable config (``configure`` + ``/-/reload``)."""

    def __init__(self, binary_path: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.configure([])
        super().__init__("prometheus", [
            binary_path, f"--config.file={self.config_path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d", "--log.level=warn",
        ], workdir, ready=lambda: http("GET", f"{self.url}/-/ready")[0] == 200, ready_timeout=60)

    def configure(self, scrape_configs: list[dict[str, Any]], *, rule_files: list[str] | None = None,
                  alertmanagers: list[str] | None = None, interval: str = "1s") -> None:
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "scrape_configs": scrape_configs,
        }
        if rule_files:
            cfg["rule_files"] = rule_files
        if alertmanagers:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        if getattr(self, "proc", None) is not None and self.running:
            status, body = http("POST", f"{self.url}/-/reload")
            if status != 200:
                raise RuntimeError(f"prometheus reload failed: {status} {body}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        status, body = http("GET", f"{self.url}/api/v1/query?{q}")
        if status != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {status} {body}")
        return body["data"]["result"]

    def scraped_since(self, at: float) -> bool:
        """Every target has been scraped after the wall-clock time ``at``.

        Asks the targets API, not ``timestamp(up)``: a config reload that removes a job writes no
        staleness markers, so the ``up`` series of earlier tests' jobs stay visible (with their old
        timestamps) for the 5-minute lookback and would hold this false that long.
        """
        status, body = http("GET", f"{self.url}/api/v1/targets?state=active")
        if status != 200 or body.get("status") != "success":
            raise RuntimeError(f"targets failed: {status} {body}")
        targets = body["data"]["activeTargets"]
        return bool(targets) and min(datetime.fromisoformat(t["lastScrape"]).timestamp() for t in targets) > at

    def samples_of(self, selector: str, window: str = "1m") -> int:
        """The fewest samples any series of ``selector`` has in the last ``window`` (0 when none exists)."""
        got = self.query(f"{selector}[{window}]")        # a range vector: every series with its samples
        return min((len(r["values"]) for r in got), default=0)


@pytest.fixture(scope="session")
def prometheus(servers_settings: dict[str, str]) -> Iterator[PrometheusServer]:
    path = binary(servers_settings, "INCIDENTD_PROMETHEUS_BIN", "prometheus")
    if path is None:
        unavailable("prometheus not found: run scripts/servers/install.sh")
    workdir = _tempdir("incidentd-prometheus-")
    server = PrometheusServer(path, workdir)  # type: ignore[arg-type]
    try:
        server.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


# --- Alertmanager ---------------------------------------------------------------------------

class AlertmanagerServer(Server):
    def __init__(self, binary_path: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(
            {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
        super().__init__("alertmanager", [
            binary_path, f"--config.file={self.config_path}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",           # no gossip port: loopback HTTP only
            "--log.level=warn",
        ], workdir, ready=lambda: http("GET", f"{self.url}/-/ready")[0] == 200, ready_timeout=60)

    def configure(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)
        if self.running:
            status, body = http("POST", f"{self.url}/-/reload")
            if status != 200:
                raise RuntimeError(f"alertmanager reload failed: {status} {body}")


@pytest.fixture(scope="session")
def alertmanager(servers_settings: dict[str, str]) -> Iterator[AlertmanagerServer]:
    path = binary(servers_settings, "INCIDENTD_ALERTMANAGER_BIN", "prometheus-alertmanager") or binary(
        servers_settings, "INCIDENTD_ALERTMANAGER_BIN", "alertmanager")
    if path is None:
        unavailable("alertmanager not found: run scripts/servers/install.sh")
    workdir = _tempdir("incidentd-alertmanager-")
    server = AlertmanagerServer(path, workdir)  # type: ignore[arg-type]
    try:
        server.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


# --- Elasticsearch --------------------------------------------------------------------------

class ElasticsearchServer(Server):
    """Elasticsearch from the integ-test-zip, as the unprivileged user, security off, loopback only.

    ``stop()`` / ``start()`` keep the same port and data directory (for the outage test).
    """

    def __init__(self, home: Path, java_home: str, user: str | None, workdir: Path, version: str) -> None:
        self.version = version
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = workdir / "config"
        shutil.copytree(home / "config", conf)
        (conf / "jvm.options.d").mkdir(exist_ok=True)
        (conf / "jvm.options.d" / "incidentd-test.options").write_text("-Xms512m\n-Xmx512m\n-XX:TieredStopAtLevel=1\n")
        settings = {
            "cluster.name": "incidentd-test",
            "node.name": "incidentd-test-node",
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": free_port(),
            "path.data": str(workdir / "data"),
            "path.logs": str(workdir / "logs"),
            "xpack.security.enabled": False,
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        (conf / "elasticsearch.yml").write_text(yaml.safe_dump(settings))
        for sub in ("data", "logs", "tmp"):
            (workdir / sub).mkdir(exist_ok=True)
        if user is not None:
            _chown_tree(workdir, user)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ES_JAVA_HOME": java_home,
               "ES_PATH_CONF": str(conf), "ES_TMPDIR": str(workdir / "tmp"), "LANG": "C.UTF-8"}
        super().__init__("elasticsearch", [str(home / "bin" / "elasticsearch")], workdir, env=env, user=user,
                         ready=self._ready, ready_timeout=180)

    def _ready(self) -> bool:
        status, body = http("GET", f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=3)
        return status == 200 and body.get("status") in ("yellow", "green")


@pytest.fixture(scope="session")
def elasticsearch(servers_settings: dict[str, str]) -> Iterator[ElasticsearchServer]:
    home = servers_settings.get("INCIDENTD_ES_HOME")
    java = servers_settings.get("INCIDENTD_ES_JAVA_HOME")
    if not home or not (Path(home) / "bin" / "elasticsearch").exists() or not java:
        unavailable("Elasticsearch not installed: run scripts/servers/install.sh")
    user = servers_settings.get("INCIDENTD_ES_USER")
    if os.geteuid() == 0:
        if not user:
            unavailable("Elasticsearch refuses root and no INCIDENTD_ES_USER is set")
    else:
        user = None
    workdir = _tempdir("incidentd-elasticsearch-", user)
    server = ElasticsearchServer(Path(home), java, user, workdir,  # type: ignore[arg-type]
                                 servers_settings.get("INCIDENTD_ES_VERSION", "?"))
    try:
        server.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def es_client(elasticsearch: ElasticsearchServer) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(elasticsearch.url, request_timeout=30)
    yield client
    client.close()

