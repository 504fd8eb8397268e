"""`incidentd demo`: the whole loop on one machine, with faults injected one at a time.

model server (supervised by the service) -> sidecar -> service (embedded store, detectors, rules,
remediation, verification) while a traffic driver sends requests and delayed labels. Each fault is
injected, then the demo watches the incident API until the fault was localized, remediated and
verified (or not), and the incident resolved.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from diagnosis.types import ActionKind, IncidentStatus, TimelineKind
from remediation.types import ActionStatus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True, slots=True)
class Timing:
    scrape: float
    detect: float
    warmup: float
    control: float
    phase_timeout: float
    settle: float
    window_seconds: float
    detection: dict[str, Any]
    remediation: dict[str, Any]


# The demo runs on small shared machines whose cores slow down for tens of seconds when a neighbour is busy:
# the model server then spends 3-6x its CPU on the same traffic (measured: 0.03 -> 0.19 of the host). A serving
# process that starves itself (the cpu_starvation fault: a spinning thread) takes a whole core, half the host's
# CPUs here (measured: 0.3 and rising at its first reading), so a floor of a fifth of the host tells them apart.
NOISY_HOST_CPU_FLOOR = 0.2
# The same slowdowns take the demo model's p90 latency from ~1 ms to 5-17 ms for tens of seconds (measured in
# healthy bench phases: 6x, 11x, 12x, 18x), which the relative threshold alone reads as a latency incident. A
# starved or creeping server goes far past that (measured: 90 ms under cpu_contention; the creep adds 2 ms a
# second), so the demo asks for 20 ms above the baseline too, as a user would set a floor under their SLO.
NOISY_HOST_LATENCY_FLOOR = 0.02
FAST = Timing(scrape=0.5, detect=2.0, warmup=30.0, control=25.0, phase_timeout=75.0, settle=4.0, window_seconds=12.0,
              detection={"accuracy_window_seconds": 15, "error_window_seconds": 15, "counter_window_seconds": 8,
                         "label_stall_seconds": 30, "request_stall_seconds": 5, "confirm_points": 2, "resolve_after_seconds": 8,
                         # slow faults (issue 18): windows that fit a demo phase; act on a leak an hour ahead.
                         # Forecasts look 2 h ahead: the demo server's prediction log fills for its first
                         # minutes (~0.2 MB/s, bounded at 20,000 rows), which must not read as a leak.
                         "trend_window_seconds": 16, "exhaustion_lead_seconds": 7200, "disk_horizon_seconds": 7200,
                         "exhaustion_horizon_seconds": 7200,
                         "latency_sustain_seconds": 6, "process_cpu_floor_ratio": NOISY_HOST_CPU_FLOOR,
                         "latency_floor_seconds": NOISY_HOST_LATENCY_FLOOR},
              remediation={"cooldown_seconds": 60, "verify_seconds": 40, "act_after_cycles": 2,
                           "restart_grace_seconds": 12, "max_actions_per_incident": 2})
NORMAL = Timing(scrape=2.0, detect=5.0, warmup=60.0, control=60.0, phase_timeout=240.0, settle=10.0, window_seconds=30.0,
                detection={"accuracy_window_seconds": 40, "error_window_seconds": 30, "counter_window_seconds": 20,
                           "label_stall_seconds": 60, "request_stall_seconds": 15, "confirm_points": 2, "resolve_after_seconds": 30,
                           "trend_window_seconds": 40, "exhaustion_lead_seconds": 7200,
                           "exhaustion_horizon_seconds": 7200,
                           "disk_horizon_seconds": 7200, "latency_sustain_seconds": 15,
                           "process_cpu_floor_ratio": NOISY_HOST_CPU_FLOOR,
                           "latency_floor_seconds": NOISY_HOST_LATENCY_FLOOR},
                remediation={"cooldown_seconds": 120, "verify_seconds": 90, "act_after_cycles": 2,
                             "restart_grace_seconds": 20, "max_actions_per_incident": 2})


@dataclass(slots=True)
class FaultResult:
    fault: str
    expected_domain: str
    detected: bool = False
    detect_seconds: float | None = None
    domain: str | None = None
    root_cause: str | None = None
    action: str | None = None
    remediated: bool = False
    recover_seconds: float | None = None
    incident_id: str | None = None
    expected_action: str | None = None
    expected_root_cause: str | None = None
    false_remediation: bool = False
    notes: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        keys = ("fault", "expected_domain", "detected", "detect_seconds", "domain", "root_cause", "action",
                "remediated", "recover_seconds")
        d = asdict(self)
        return {k: d[k] for k in keys}


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    expected_domain: str
    expected_action: ActionKind | None   # None: the incident must not act on the model
    inject: Callable[[Demo], None]
    clear: Callable[[Demo], None]
    expected_root_cause: str | None = None


DRIFT_FEATURES = [19, 20, 21, 26, 27, 28, 35, 36, 43, 44]


# Faults of the taxonomy that do not apply on a third-party server, and why (README, fault bench).
_NO_WEIGHTS = ("incidentd reads weight health from its own instrumentation and clamps through the PyTorch "
               "checkpoint; {} serves its own copy of the weights")
_NO_PROCESS = ("incidentd does not supervise a third-party server's process: its restart reloads the model, which "
               "cannot bring back a dead or blocked server")
_NO_WORKER = ("{}'s metrics carry no CPU or memory of its {} processes, so a starved or leaking one cannot be "
              "told from a slow dependency: the restart it needs would be a guess")
NOT_ON_SERVER: dict[str, dict[str, str]] = {
    "ours": {},
    "mlserver": {
        "nonfinite_weights": _NO_WEIGHTS.format("MLServer"), "exploding_weights": _NO_WEIGHTS.format("MLServer"),
        "null_features": "the Open Inference Protocol's JSON has no null in a numeric tensor: MLServer refuses "
                         "the request (an error, not a missing feature)",
        "crash": _NO_PROCESS, "hang": _NO_PROCESS,
    },
    "torchserve": {
        "nonfinite_weights": _NO_WEIGHTS.format("TorchServe"), "exploding_weights": _NO_WEIGHTS.format("TorchServe"),
        "crash": _NO_PROCESS, "hang": _NO_PROCESS,
        **dict.fromkeys(("memory_pressure", "cpu_contention", "memory_leak", "latency_creep"),
                        _NO_WORKER.format("TorchServe", "worker")),
    },
    "triton": {
        "nonfinite_weights": _NO_WEIGHTS.format("Triton"), "exploding_weights": _NO_WEIGHTS.format("Triton"),
        "null_features": "the Open Inference Protocol's JSON has no null in a numeric tensor: Triton refuses "
                         "the request (an error, not a missing feature)",
        "crash": _NO_PROCESS, "hang": _NO_PROCESS,
        **dict.fromkeys(("memory_pressure", "cpu_contention", "memory_leak", "latency_creep"),
                        _NO_WORKER.format("Triton", "Python-backend model")
                        + " (its nv_cpu_* metrics are the host's)"),
    },
}


# The demo's faults, by their name in the taxonomy (what decides whether they run on a server).
DEMO_FAULT_TAXONOMY = {"nonfinite_weights": "nonfinite_weights", "bad_version_deploy": "bad_version",
                       "input_drift": "covariate_drift", "cpu_starvation": "cpu_contention"}
# Servers the demo runs on -> demo faults that do not apply there, and why (README "Watch your own model server").
SERVERS: dict[str, dict[str, str]] = {
    server: {demo: why[taxonomy] for demo, taxonomy in DEMO_FAULT_TAXONOMY.items() if taxonomy in why}
    for server, why in NOT_ON_SERVER.items()
}


def _faults(server: str = "ours") -> list[Fault]:
    def post(path: str, body: dict) -> Callable[[Demo], None]:
        def go(d: Demo) -> None:
            d.model_admin("POST", path, body)
        return go

    def noop(d: Demo) -> None:
        return None

    drift = Fault("input_drift", "data", None,
                  lambda d: d.traffic.set_drift(0.6, DRIFT_FEATURES, scale=1.0, shift=7.0),
                  lambda d: d.traffic.set_drift(0.0), "data.covariate_drift")
    if server != "ours":
        # A deploy is what a user does on that server (MLServer: v2's settings and a reload; TorchServe:
        # set-default); the starvation lives in the model instance (the fault hook), so the server's own
        # reload, incidentd's restart there, ends it.
        on_server = [
            Fault("bad_version_deploy", "model", ActionKind.ROLLBACK, lambda d: d.stack.deploy("v2"), noop,
                  "model.bad_version"),
            drift,
            Fault("cpu_starvation", "hardware", ActionKind.RESTART,
                  lambda d: d.stack.inject("starvation", {"threads": 3, "seconds": 300}),
                  lambda d: d.stack.clear(), "hardware.cpu_contention"),
        ]
        return [f for f in on_server if f.name not in SERVERS[server]]
    return [
        Fault("nonfinite_weights", "model", ActionKind.CLAMP,
              post("/admin/faults", {"fault": "nonfinite_weights", "params": {"count": 12, "value": "nan"}}), noop,
              "model.nonfinite_weights"),
        Fault("bad_version_deploy", "model", ActionKind.ROLLBACK, post("/admin/load", {"version": "v2"}), noop,
              "model.bad_version"),
        drift,
        Fault("cpu_starvation", "hardware", ActionKind.RESTART,
              post("/admin/faults", {"fault": "starvation", "params": {"threads": 3, "seconds": 300}}), noop,
              "hardware.cpu_contention"),
    ]


class Demo:
    def __init__(self, fast: bool = True, workdir: Path | None = None, progress: Callable[[str], None] | None = None,
                 plots: bool = True, remediation: dict[str, Any] | None = None, server: str = "ours"):
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}; the demo runs on {', '.join(SERVERS)}")
        self.server = server
        self.t = FAST if fast else NORMAL
        self.remediation = {**self.t.remediation, **(remediation or {})}
        self.fast = fast
        self._owned = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="incidentd-demo-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self._progress = progress or (lambda msg: None)
        self.plots = plots
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.model_port, self.sidecar_port, self.service_port = _free_port(), _free_port(), _free_port()
        self.proxy_port = _free_port()
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self.stack: Any = None      # the third-party server, when the demo runs on one
        self.model_url = f"http://127.0.0.1:{self.model_port}"
        self.sidecar_url = f"http://127.0.0.1:{self.sidecar_port}"
        self.service_url = f"http://127.0.0.1:{self.service_port}"
        self.http = httpx.Client(timeout=10.0)
        # Credentials the demo makes for itself (docs/security.md): the model server's admin token, which
        # the service's executors send too, and an API key for the service, created before it starts.
        self.admin_token = secrets.token_urlsafe(32)
        self._admin_headers = {"Authorization": f"Bearer {self.admin_token}"}
        self._api_headers: dict[str, str] = {}
        self.traffic: Any = None
        self.gpu_state = self.workdir / "gpu-sim.json"

    def say(self, msg: str) -> None:
        self._progress(f"[{time.monotonic() - self.t0:6.1f}s] {msg}")

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen([sys.executable, "-m", "incidentd.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        log.close()
        self.procs.append((name, p))
        return p

    def _wait_http(self, url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url} exited with {proc.returncode} during start; see {self.workdir}")
            try:
                if self.http.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{url} did not become healthy in {timeout:.0f}s; logs in {self.workdir}")

    def model_admin(self, method: str, path: str, body: dict | None = None) -> dict:
        r = self.http.request(method, self.model_url + path, json=body, headers=self._admin_headers)
        r.raise_for_status()
        return r.json()

    def api(self, method: str, path: str, body: dict | None = None) -> Any:
        r = self.http.request(method, self.service_url + path, json=body, headers=self._api_headers)
        r.raise_for_status()
        return r.json()

    def _issue_key(self, database: str) -> str:
        """An API key for the demo's own calls (read, respond, approve), as `incidentd keys create` makes one."""
        from incidentd.auth.keys import create_key, revoke_key
        from incidentd.auth.scopes import Scope
        from incidentd.store import Store

        store = Store(database)
        try:
            revoke_key(store, "demo")   # a reused workdir: the previous run's key goes
            return create_key(store, "demo", frozenset({Scope.READ, Scope.RESPOND, Scope.APPROVE})).key
        finally:
            store.close()

    def _registry(self) -> Path:
        """The model registry with v1 (good, known good) and v2 (a bad release), trained once per workdir."""
        from incidentd.model_server.model import train_version
        from remediation.registry import ModelRegistry

        registry_dir = self.workdir / "registry"
        reg = ModelRegistry(registry_dir)
        if not reg.exists("v1"):
            self.say("training v1 (digits MLP) into the model registry")
            meta = train_version(reg, "v1", seed=0, mark_known_good=True, make_current=True)
            self.say(f"v1 holdout accuracy {meta.get('holdout_accuracy')}")
        if not reg.exists("v2"):
            self.say("training v2, a bad release (shuffled labels), for the deploy fault")
            train_version(reg, "v2", seed=1, shuffle_labels=True, parent="v1", notes="bad release for the demo")
        return registry_dir

    def _service_config(self) -> dict[str, Any]:
        t = self.t
        return {
            "host": "127.0.0.1", "port": self.service_port, "database": str(self.workdir / "incidentd.db"),
            "scrape_targets": [self.sidecar_url], "scrape_interval_seconds": t.scrape,
            "detect_interval_seconds": t.detect, "retention_seconds": 900, "models": ["digits"],
            "detection": t.detection, "remediation": self.remediation,
        }

    def _sidecar_args(self) -> list[str]:
        t = self.t
        return ["--port", str(self.sidecar_port), "--interval", str(t.scrape), "--gpu", "simulated",
                "--gpu-sim-state", str(self.gpu_state), "--model-name", "digits",
                "--window-seconds", str(t.window_seconds), "--window-rows", "400", "--drift-min-rows", "200",
                "--drift-alpha", "0.0001", "--drift-psi-threshold", "0.3", "--log-level", "WARNING"]

    def _start_service(self, cfg: dict[str, Any]) -> None:
        cfg_path = self.workdir / "incidentd.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cfg_path.chmod(0o600)   # may hold the admin token
        self._api_headers = {"Authorization": f"Bearer {self._issue_key(str(cfg['database']))}"}
        svc = self._spawn("service", ["serve", "--config", str(cfg_path), "--log-level", "INFO"])
        self._wait_http(self.service_url + "/healthz", 120, svc)

    def start(self) -> None:
        registry_dir = self._registry()
        self.gpu_state.write_text("{}")
        if self.server != "ours":
            self._start_thirdparty(registry_dir)
        else:
            self._start_ours(registry_dir)
        from incidentd.model_server.traffic import TrafficDriver

        delay = 1.0 if self.fast else 3.0
        if self.stack is not None:
            # Through the sidecar's proxy, as a user's clients would be pointed at it; labels to its /feedback.
            self.traffic = TrafficDriver(self.proxy_url, rate_per_second=20.0, label_delay_seconds=delay,
                                         batch_size=2, seed=7, timeout_seconds=2.0,
                                         protocol=self.stack.traffic_protocol,
                                         feedback_url=self.sidecar_url + "/feedback").start()
        else:
            self.traffic = TrafficDriver(self.model_url, rate_per_second=20.0, label_delay_seconds=delay,
                                         batch_size=2, seed=7, timeout_seconds=2.0).start()

    def _start_ours(self, registry_dir: Path) -> None:
        token_file = self.workdir / "model-server-admin-token"
        token_file.write_text(self.admin_token + "\n")
        token_file.chmod(0o600)
        cfg = {
            **self._service_config(),
            "model_server_url": self.model_url,
            "supervise_command": [sys.executable, "-m", "incidentd.cli", "model-server", "--registry",
                                  str(registry_dir), "--port", str(self.model_port), "--enable-fault-injection",
                                  "--model-name", "digits", "--device", "cpu", "--log-level", "warning",
                                  "--admin-token-file", str(token_file)],
            "model_server_admin_token": self.admin_token,
            "supervise_log": str(self.workdir / "model-server.log"),
        }
        self.say("starting the service (it supervises the model server)")
        self._start_service(cfg)
        self._wait_http(self.model_url + "/healthz", 60)
        self.say(f"service {self.service_url}, model server {self.model_url}")
        side = self._spawn("sidecar", ["sidecar", "--target", self.model_url, *self._sidecar_args(),
                                       "--disk-path", str(self.workdir / "registry")])
        self._wait_http(self.sidecar_url + "/metrics", 60, side)
        self.say(f"sidecar {self.sidecar_url}")

    def _start_thirdparty(self, registry_dir: Path) -> None:
        from incidentd.demo_servers.mlserver import MLServerStack
        from incidentd.demo_servers.stack import ServerStack
        from incidentd.demo_servers.torchserve import TorchServeStack
        from incidentd.demo_servers.triton import TritonStack
        from remediation.registry import ModelRegistry

        stacks: dict[str, Callable[[Path, ModelRegistry], ServerStack]] = {
            "mlserver": MLServerStack, "torchserve": TorchServeStack, "triton": TritonStack}
        stack = stacks[self.server](self.workdir, ModelRegistry(registry_dir))
        self.stack = stack
        self.say(f"starting {self.server} (its own venv) with digits v1 serving")
        stack.start()
        assert stack.proc is not None
        self.procs.append((self.server, stack.proc))
        self.model_url = stack.url
        self.say(f"{self.server} {stack.url} (metrics {stack.metrics_url}), log {stack.log}")
        cfg = self._service_config()
        cfg["remediation"] = {**cfg["remediation"], "executor": stack.executor()}
        limit = stack.memory_limit_bytes()
        if limit is not None:
            cfg["models"] = {"digits": {"memory_limit_bytes": limit}}
        self.say(f"starting the service (it acts on {self.server} through the server's own control API)")
        self._start_service(cfg)
        infer = "/v2/models/digits/ready" if stack.traffic_protocol == "oip" else "/ping"
        side = self._spawn("sidecar", ["sidecar", "--server-kind", self.server, "--target", stack.url,
                                       "--metrics-url", stack.metrics_url, "--proxy-listen",
                                       f"127.0.0.1:{self.proxy_port}", "--reference", str(stack.reference),
                                       "--process-source", "scrape", "--disk-path", str(stack.root),
                                       *self._sidecar_args()])
        self._wait_http(self.sidecar_url + "/metrics", 60, side)
        self._wait_http(self.proxy_url + infer, 30, side)
        self.say(f"sidecar {self.sidecar_url}, its proxy {self.proxy_url} (traffic goes through it)")

    def stop(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.stack is not None:
            self.stack.clear()
            self.stack.stop()
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
                except ProcessLookupError:
                    pass
        self.http.close()

    def cleanup(self) -> None:
        if self._owned:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ observing

    def incidents_since(self, since_wall: float) -> list[dict]:
        return [i for i in self.api("GET", "/incidents?limit=200")["incidents"] if i["opened_at"] >= since_wall]

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if any(p.poll() is not None for _, p in self.procs):
                dead = [n for n, p in self.procs if p.poll() is not None]
                raise RuntimeError(f"{', '.join(dead)} exited; logs in {self.workdir}")
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until the service sees no active signal on the model (host-wide ones aside)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                signals = self.api("GET", "/models/digits/signals")["signals"]
            except httpx.HTTPError:
                signals = {}
            busy = [n for n, r in signals.items() if r["active"] and n not in ("host_cpu", "host_memory")]
            if signals and not busy:
                return True
            self.wait(1.0)
        return False

    def run_fault(self, fault: Fault) -> FaultResult:
        res = FaultResult(fault.name, fault.expected_domain, expected_action=fault.expected_action,
                          expected_root_cause=fault.expected_root_cause)
        self.say(f"fault {fault.name}: injecting (expect {fault.expected_domain}"
                 f"{', ' + fault.expected_action if fault.expected_action else ', no action on the model'})")
        injected = time.time()
        fault.inject(self)
        deadline = time.monotonic() + self.t.phase_timeout
        inc: dict | None = None
        stable_data = 0
        while time.monotonic() < deadline:
            self.wait(0.5)
            if inc is None:
                new = self.incidents_since(injected - 1.0)
                if not new:
                    continue
                inc = min(new, key=lambda i: i["opened_at"])
                res.detected, res.incident_id = True, inc["id"]
                res.detect_seconds = round(max(0.0, inc["opened_at"] - injected), 2)
                self.say(f"fault {fault.name}: incident {inc['id']} opened after {res.detect_seconds:.1f}s")
            detail = self.api("GET", f"/incidents/{inc['id']}")
            top = detail["hypotheses"][0] if detail["hypotheses"] else None
            actions = detail["actions"]
            done = [a for a in actions if ActionStatus(a["status"]).finished]
            if fault.expected_action is None and top and top["domain"] == fault.expected_domain:
                stable_data += 1
                if stable_data >= 3:
                    break
            if done or detail["escalated"]:
                break
        if inc is None:
            self.say(f"fault {fault.name}: NOT detected within {self.t.phase_timeout:.0f}s")
            fault.clear(self)
            return res
        fault.clear(self)
        # Let the incident resolve on its own before the next fault, so each fault gets its own incident.
        resolve_deadline = time.monotonic() + self.t.phase_timeout
        detail = self.api("GET", f"/incidents/{inc['id']}")
        while detail["status"] != IncidentStatus.RESOLVED and time.monotonic() < resolve_deadline:
            self.wait(1.0)
            detail = self.api("GET", f"/incidents/{inc['id']}")
        if detail["status"] != IncidentStatus.RESOLVED:
            res.notes.append("incident did not resolve by itself in time; resolved by the demo")
            self.api("POST", f"/incidents/{inc['id']}/resolve", {"note": "phase timeout"})
        top = detail["hypotheses"][0] if detail["hypotheses"] else None
        res.domain = top["domain"] if top else None
        res.root_cause = top["root_cause"] if top else None
        executed = [a for a in detail["actions"] if ActionStatus(a["status"]).executed]
        if executed:
            res.action = executed[0]["kind"]
            res.false_remediation = fault.expected_action is None or res.action != fault.expected_action
        verified = [a for a in executed if a["status"] == ActionStatus.VERIFIED]
        if verified:
            res.remediated = True
            res.recover_seconds = round(verified[0]["verified_at"] - detail["opened_at"], 2)
        self.say(f"fault {fault.name}: {res.domain} / {res.root_cause}; action {res.action or 'none'}; "
                 f"{'verified' if res.remediated else 'not remediated'}"
                 + (f" {res.recover_seconds:.1f}s after detection" if res.recover_seconds is not None else "")
                 + f"; incident {detail['status']}")
        if res.root_cause != fault.expected_root_cause:
            # How the ranking moved, for whoever reads a failed run (CI shows only this output).
            for entry in detail.get("timeline", []):
                if entry["kind"] in (TimelineKind.OPENED, TimelineKind.HYPOTHESES, TimelineKind.RESOLVED):
                    self.say(f"  {entry['at'] - injected:6.1f}s {entry['kind']}: {entry['message'][:240]}")
        if self.plots:
            self._save_plot(inc["id"], fault.name)
        return res

    def _save_plot(self, incident_id: str, name: str) -> None:
        try:
            r = self.http.get(f"{self.service_url}/incidents/{incident_id}/plot.png", headers=self._api_headers)
            if r.status_code == 200:
                out = self.workdir / f"incident-{name}.png"
                out.write_bytes(r.content)
                self.say(f"plot: {out}")
        except httpx.HTTPError:
            pass

    # ------------------------------------------------------------------ the whole run

    def warm_up(self) -> None:
        self.say(f"warming up for {self.t.warmup:.0f}s (detectors learn their baselines)")
        self.wait(self.t.warmup)
        self.wait_quiet(self.t.warmup)

    def control(self) -> tuple[int, int]:
        """A healthy period: returns (incidents opened, actions executed) — both should be 0."""
        self.say(f"healthy control period: {self.t.control:.0f}s without any fault")
        control_start = time.time()
        self.wait(self.t.control)
        incs = self.incidents_since(control_start)
        actions = sum(1 for i in incs for a in self.api("GET", f"/incidents/{i['id']}")["actions"]
                      if ActionStatus(a["status"]).executed)
        self.say(f"healthy control: {len(incs)} incident(s) opened, {actions} action(s)")
        for inc in incs:
            self.api("POST", f"/incidents/{inc['id']}/resolve", {"note": "false incident"})
        return len(incs), actions

    def resolve_leftovers(self) -> int:
        """Resolve incidents still active before a fault is injected; returns how many (each is a false one).

        Every judged fault's incident is resolved by then, so an active one was opened by nothing injected
        (noise while waiting for quiet). Left open, it would absorb the next fault's symptoms (one incident
        per model) and that fault would count as undetected.
        """
        left = [i for i in self.api("GET", "/incidents?limit=200")["incidents"]
                if IncidentStatus(i["status"]) is not IncidentStatus.RESOLVED]
        for inc in left:
            self.say(f"false incident {inc['id']} ({inc['title']}) still open before the next fault: resolved")
            self.api("POST", f"/incidents/{inc['id']}/resolve", {"note": "false incident, open between faults"})
        return len(left)

    def run_phase(self, fault: Fault) -> tuple[FaultResult, int]:
        """One fault, then wait for quiet; returns the result and the extra incidents it opened."""
        leftovers = self.resolve_leftovers()
        phase_start = time.time()
        res = self.run_fault(fault)
        # More than one incident for one fault counts the extras as false incidents.
        extra = max(0, len(self.incidents_since(phase_start)) - (1 if res.detected else 0))
        self.wait(self.t.settle)
        if not self.wait_quiet(self.t.phase_timeout):
            self.say("signals still active after the settle period; continuing")
        return res, extra + leftovers

    def run(self) -> dict[str, Any]:
        self.start()
        self.warm_up()
        false_incidents, _ = self.control()
        results = []
        for fault in _faults(self.server):
            res, extra = self.run_phase(fault)
            false_incidents += extra
            results.append(res)
        stats = self.traffic.stats()
        self.say(f"traffic: {stats.requests_sent} requests, {stats.labels_sent} labels, "
                 f"{stats.requests_failed} failed requests")
        return {"faults": [r.public() for r in results], "false_incidents": false_incidents,
                "details": {"workdir": str(self.workdir), "server": self.server,
                            "not_applicable": SERVERS[self.server], "notes": {r.fault: r.notes for r in results if r.notes},
                            "expected_actions": {r.fault: r.expected_action for r in results},
                            "incidents": {r.fault: r.incident_id for r in results}}}


def format_table(report: dict[str, Any]) -> str:
    head = ["fault", "expected", "detected", "detect s", "domain", "root cause", "action", "remediated", "recover s"]
    rows = [head]
    for f in report["faults"]:
        rows.append([f["fault"], f["expected_domain"], "yes" if f["detected"] else "NO",
                     "-" if f["detect_seconds"] is None else f"{f['detect_seconds']:.1f}", f["domain"] or "-",
                     f["root_cause"] or "-", f["action"] or "none", "yes" if f["remediated"] else "no",
                     "-" if f["recover_seconds"] is None else f"{f['recover_seconds']:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"false incidents (healthy control and extras): {report['false_incidents']}")
    for name, why in report.get("details", {}).get("not_applicable", {}).items():
        lines.append(f"not run on {report['details']['server']}: {name} ({why})")
    return "\n".join(lines)


def passed(report: dict[str, Any]) -> bool:
    """Every fault detected in its domain, remediated where an action is expected, none where not."""
    expected = report["details"]["expected_actions"]
    for f in report["faults"]:
        want = expected[f["fault"]]
        if not f["detected"] or f["domain"] != f["expected_domain"]:
            return False
        if want is None and f["action"] is not None:
            return False
        if want is not None and (f["action"] != want or not f["remediated"]):
            return False
    return report["false_incidents"] == 0


def to_json(report: dict[str, Any]) -> str:
    return json.dumps({"faults": report["faults"], "false_incidents": report["false_incidents"]})
