"""Executors against the real third-party servers: rollback and restart act through each server's own
control API, are read back, are idempotent, and a dry run changes nothing.

Each server is installed by scripts/servers/install_model_servers.sh and started here once per module with
two versions of the tiny classifier (tests/integration/model_servers). With CI=true a server that cannot
start fails; elsewhere its tests skip with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from remediation.executors_oip import MLServerRepository
from remediation.executors_servers import KnownGoodTracker, ServerControlAdmin
from remediation.executors_systemd import RestartExecutor, RollbackExecutor
from remediation.types import ActionFailed
from tests.integration.model_servers import launch

ROW = [[0.5, -0.2, 0.1, 0.3]]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(why: str) -> NoReturn:
    if in_ci():
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


class MemoryKV:
    def __init__(self) -> None:
        self.d: dict[str, object] = {}

    def put(self, key: str, value: object) -> None:
        self.d[key] = json.loads(json.dumps(value))

    def get(self, key: str, default: object = None) -> object:
        return self.d.get(key, default)


# ---------------------------------------------------------------- MLServer


def _mlserver_version(repo: Path, version: str) -> None:
    d = repo / "tiny" / f"v{version}"
    d.mkdir(parents=True)
    for name in ("tiny_model.py", "mlserver_runtime.py"):
        shutil.copy(launch.HERE / name, d / name)
    (d / "model-settings.json").write_text(json.dumps({
        "name": "tiny", "implementation": "mlserver_runtime.TinyModel", "parameters": {"version": version},
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}]}))


@pytest.fixture(scope="module")
def mlserver() -> Iterator[tuple[str, Path]]:
    try:
        py = launch.venv("mlserver")
    except launch.Unavailable as e:
        unavailable(str(e))
    work = Path(tempfile.mkdtemp(prefix="incidentd-mlserver-exec-"))
    repo = work / "models"
    for v in ("1", "2"):
        _mlserver_version(repo, v)
    http, grpc, metrics = launch.free_port(), launch.free_port(), launch.free_port()
    (repo / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc,
                                                   "metrics_port": metrics, "parallel_workers": 0}))
    proc, log = launch._spawn([str(py / "bin/mlserver"), "start", str(repo)], work)
    s = launch.Served("mlserver", f"http://127.0.0.1:{http}", "", "v2", "tiny", proc, work, log)
    try:
        launch._wait(f"{s.base_url}/v2/models/tiny/versions/2/ready", proc, log)
    except launch.Unavailable as e:
        launch.stop(s)
        unavailable(f"mlserver could not start: {e}")
    yield s.base_url, repo
    launch.stop(s)


def served_version(base: str) -> str:
    r = httpx.post(f"{base}/v2/models/tiny/infer", timeout=30,
                   json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW[0]}]})
    r.raise_for_status()
    return str(r.json()["model_version"])


def settings_files(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("model-settings.json*"))


def test_mlserver_executor_is_both_executor_kinds(mlserver: tuple[str, Path]) -> None:
    ex = MLServerRepository(mlserver[0], "tiny", repository_dir=mlserver[1])
    assert isinstance(ex, RestartExecutor) and isinstance(ex, RollbackExecutor)


def test_mlserver_rollback_loads_known_good_and_unloads_bad(mlserver: tuple[str, Path]) -> None:
    base, repo = mlserver
    ex = MLServerRepository(base, "tiny", repository_dir=repo)
    assert ex.current() == "2" and served_version(base) == "2"

    files = settings_files(repo)
    dry = ex.rollback_to("1", dry_run=True)
    assert dry.dry_run and not dry.noop and dry.after == "1"
    assert [r.method for r in dry.requests] == ["RENAME", "POST"]
    assert settings_files(repo) == files and ex.current() == "2" and served_version(base) == "2"

    out = ex.rollback_to("1")
    assert (out.before, out.after, out.noop) == ("2", "1", False)
    assert served_version(base) == "1"                  # unversioned requests reach the known-good one
    assert not ex.version_ready("2")                    # the bad version is unloaded
    assert ex.ready_versions() == ["1"]

    again = ex.rollback_to("1")
    assert again.noop and again.requests == ()

    # The revert: back to the bad version, the same move the other way.
    assert ex.rollback("2") == ("1", "2")
    assert served_version(base) == "2" and ex.ready_versions() == ["1", "2"]
    assert settings_files(repo) == files


def test_mlserver_restart_reloads_one_model(mlserver: tuple[str, Path]) -> None:
    base, repo = mlserver
    ex = MLServerRepository(base, "tiny", repository_dir=repo)
    dry = ex.restart_model(dry_run=True)
    assert dry.dry_run and [r.url.rsplit("/", 1)[1] for r in dry.requests] == ["unload", "load"]
    assert ex.restarts == 0
    out = ex.restart_model()
    assert (out.before, out.after) == ("2", "2") and ex.model_ready() and served_version(base) == "2"
    assert ex.restart() == (1, 2)


def test_mlserver_refusals_are_named(mlserver: tuple[str, Path]) -> None:
    base, repo = mlserver
    with pytest.raises(ActionFailed, match=r"version 7 of tiny is not in the model repository"):
        MLServerRepository(base, "tiny", repository_dir=repo).rollback_to("7")
    with pytest.raises(ActionFailed, match=r"rollback needs remediation.executor.repository_dir"):
        MLServerRepository(base, "tiny").rollback_to("1")
    with pytest.raises(ActionFailed, match=r"MLServer refused POST /v2/repository/models/nosuch/load: 404"):
        MLServerRepository(base, "nosuch").request("POST", "/v2/repository/models/nosuch/load", json={})


def test_mlserver_through_the_rollback_action(mlserver: tuple[str, Path]) -> None:
    """The existing rollback action drives the executor; the known-good version comes from the tracker."""
    from remediation.actions import ACTIONS, ActionContext
    from remediation.types import ActionKind, Applied

    base, repo = mlserver
    ex = MLServerRepository(base, "tiny", repository_dir=repo)
    kv, t = MemoryKV(), [1000.0]
    tracker = KnownGoodTracker(kv, "mlserver", "tiny", promote_after=60, clock=lambda: t[0])
    tracker.mark("1", "configured")
    admin = ServerControlAdmin(ex, tracker)
    ctx = ActionContext(admin, process=ex, rollout=ex, release_template="{version}")
    act = ACTIONS[ActionKind.ROLLBACK]
    plan = act.plan(ctx, "tiny")
    assert not plan.noop and plan.params["from"] == "2" and plan.params["to"] == "1"
    assert act.simulate(ctx, plan) and served_version(base) == "2"
    # Read back (as after a service restart): the rollout's release is what tells, not the plan.
    assert act.readback(ctx, plan).applied is Applied.NOT_DONE
    res = act.execute(ctx, plan)
    assert res == {"noop": False, "from": "2", "to": "1"} and served_version(base) == "1"
    back = act.readback(ctx, plan)
    assert back.applied is Applied.DONE and back.shown == {"serving": "1", "target": "1"}
    # The repository API names no instance (pid None): a restart can never be read back as done.
    restart = ACTIONS[ActionKind.RESTART]
    assert restart.readback(ctx, restart.plan(ctx, "tiny")).applied is Applied.UNKNOWN
    assert act.plan(ctx, "tiny").noop
    assert act.revert(ctx, plan, res) == {"from": "1", "to": "2"} and served_version(base) == "2"
    with pytest.raises(ActionFailed, match="clamp is not available on mlserver"):
        ACTIONS[ActionKind.CLAMP].plan(ctx, "tiny")


# ---------------------------------------------------------------- TorchServe


def _archive(py: Path, work: Path, version: str, dest: Path) -> None:
    out = work / f"arch-{version}"
    out.mkdir()
    arch = subprocess.run([str(py / "bin/torch-model-archiver"), "--model-name", "tiny", "--version", version,
                           "--handler", "torchserve_handler.py", "--extra-files", "tiny_model.py",
                           "--export-path", str(out)], cwd=work, capture_output=True, text=True, timeout=120,
                          check=False)
    if arch.returncode != 0:
        unavailable(f"torch-model-archiver failed: {arch.stderr[-2000:]}")
    (out / "tiny.mar").rename(dest)


@pytest.fixture(scope="module")
def torchserve() -> Iterator[tuple[str, str]]:
    """TorchServe serving tiny 1.0 (default) and 2.0; yields (management URL, inference URL)."""
    try:
        py = launch.venv("torchserve")
    except launch.Unavailable as e:
        unavailable(str(e))
    if shutil.which("java") is None:
        unavailable("TorchServe needs Java (17+) on PATH")
    work = Path(tempfile.mkdtemp(prefix="incidentd-torchserve-exec-"))
    store = work / "model-store"
    store.mkdir()
    launch._copy_model_files(work)
    _archive(py, work, "1.0", store / "tiny.mar")
    _archive(py, work, "2.0", store / "tiny-2.mar")
    inf, mgmt, metrics = launch.free_port(), launch.free_port(), launch.free_port()
    cfg = work / "config.properties"
    cfg.write_text("\n".join([f"inference_address=http://127.0.0.1:{inf}", f"management_address=http://127.0.0.1:{mgmt}",
                              f"metrics_address=http://127.0.0.1:{metrics}", *launch.torchserve_grpc_config(),
                              "disable_token_authorization=true",
                              "enable_envvars_config=false", "default_workers_per_model=1", f"model_store={store}",
                              "load_models=tiny.mar", "install_py_dep_per_model=false",
                              "enable_model_api=true"]) + "\n")
    env = {"PATH": f"{py}/bin:{os.environ.get('PATH', '')}", "TS_CONFIG_FILE": str(cfg), **launch.torchserve_tmp_env(work)}
    proc, log = launch._spawn([str(py / "bin/torchserve"), "--start", "--foreground", "--ncs", "--ts-config", str(cfg),
                               "--model-store", str(store), "--disable-token-auth"], work, env)
    s = launch.Served("torchserve", f"http://127.0.0.1:{inf}", "", "torchserve", "tiny", proc, work, log,
                      extra={"stop": f"{py}/bin/torchserve --stop"})
    mgmt_url = f"http://127.0.0.1:{mgmt}"
    try:
        launch._wait_model_ready(f"{mgmt_url}/models/tiny", proc, log)
        r = httpx.post(f"{mgmt_url}/models", params={"url": "tiny-2.mar", "initial_workers": 1, "synchronous": "true"},
                       timeout=180)
        if r.status_code != 200:
            raise launch.Unavailable(f"registering tiny 2.0 answered {r.status_code}: {r.text}")
    except launch.Unavailable as e:
        launch.stop(s)
        unavailable(f"torchserve could not start: {e}")
    yield mgmt_url, s.base_url
    launch.stop(s)


def ts_predict_ok(inference: str) -> bool:
    return httpx.post(f"{inference}/predictions/tiny", json={"instances": ROW}, timeout=60).status_code == 200


def test_torchserve_rollback_sets_the_default_version(torchserve: tuple[str, str]) -> None:
    from remediation.executors_torchserve import TorchServeManagement

    mgmt, inference = torchserve
    ex = TorchServeManagement(mgmt, "tiny")
    assert isinstance(ex, RestartExecutor) and isinstance(ex, RollbackExecutor)
    assert ex.current() == "1.0" and sorted(ex.versions()) == ["1.0", "2.0"]
    # Make the bad version the default first (what a deploy would do), then roll back.
    assert ex.rollback("2.0") == ("1.0", "2.0")
    dry = ex.rollback_to("1.0", dry_run=True)
    assert dry.dry_run and dry.requests[0].url.endswith("/models/tiny/1.0/set-default") and ex.current() == "2.0"
    out = ex.rollback_to("1.0")
    assert (out.before, out.after, out.noop) == ("2.0", "1.0", False) and ex.current() == "1.0"
    assert ts_predict_ok(inference)
    assert ex.rollback_to("1.0").noop
    with pytest.raises(ActionFailed, match=r"TorchServe refused PUT /models/tiny/9.9/set-default: 404"):
        ex.rollback_to("9.9")
    with pytest.raises(ActionFailed, match=r"TorchServe has no version 9.9 of tiny"):
        ex.rollback_to("9.9", dry_run=True)


def test_torchserve_restart_replaces_the_workers(torchserve: tuple[str, str]) -> None:
    from remediation.executors_torchserve import TorchServeManagement

    mgmt, inference = torchserve
    ex = TorchServeManagement(mgmt, "tiny")
    pid = ex.pid
    assert pid is not None
    dry = ex.restart_model(dry_run=True)
    assert dry.dry_run and "min_worker=0" in dry.requests[0].url and ex.pid == pid
    old, new = ex.restart()
    assert old == pid and new != pid and ex.describe().ready_workers >= 1
    assert ts_predict_ok(inference)


# ---------------------------------------------------------------- Triton (PyTriton)

TOKEN = "incidentd-test-token"


@pytest.fixture(scope="module")
def pytriton() -> Iterator[str]:
    """PyTriton serving tiny (version 1), its model-repository API open to TOKEN."""
    try:
        py = launch.venv("pytriton")
    except launch.Unavailable as e:
        unavailable(str(e))
    work = Path(tempfile.mkdtemp(prefix="incidentd-pytriton-exec-"))
    launch._copy_model_files(work)
    shutil.copy(launch.HERE / "pytriton_control.py", work / "pytriton_control.py")
    libdir = launch.settings().get("INCIDENTD_PYTRITON_LIBDIR", "")
    http, grpc, metrics = launch.free_port(), launch.free_port(), launch.free_port()
    env = {"LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}".strip(":")}
    proc, log = launch._spawn([str(py / "bin/python"), "pytriton_control.py", str(http), str(grpc), str(metrics),
                               TOKEN], work, env)
    s = launch.Served("triton", f"http://127.0.0.1:{http}", "", "v2", "tiny", proc, work, log)
    try:
        launch._wait(f"{s.base_url}/v2/models/tiny/ready", proc, log)
    except launch.Unavailable as e:
        launch.stop(s)
        unavailable(f"pytriton could not start: {e}")
    yield s.base_url
    launch.stop(s)


def test_triton_reads_the_serving_version_and_rollback_to_it_is_a_noop(pytriton: str) -> None:
    from remediation.executors_oip import TritonRepository

    ex = TritonRepository(pytriton, "tiny", headers={"triton-access-token": TOKEN})
    assert isinstance(ex, RestartExecutor) and isinstance(ex, RollbackExecutor)
    assert ex.current() == "1" and ex.ready_versions() == ["1"]
    out = ex.rollback_to("1")
    assert out.noop and out.requests == ()
    assert served_version(pytriton) == "1"


def test_triton_refusals_are_named_and_leave_the_model_serving(pytriton: str) -> None:
    """PyTriton loads its models with their files in the load request, so Triton cannot load them again from
    its repository: unloading would take the model down for good. The executor refuses before unloading."""
    from remediation.executors_oip import TritonRepository

    ex = TritonRepository(pytriton, "tiny", headers={"triton-access-token": TOKEN})
    with pytest.raises(ActionFailed, match=r"reload of triton .* refused: tiny is not in Triton's model repository"):
        ex.restart_model()
    with pytest.raises(ActionFailed, match=r"rollback of triton .* refused: tiny is not in Triton's model repository"):
        ex.rollback_to("2")
    with pytest.raises(ActionFailed, match=r"not in Triton's model repository"):
        ex.restart_model(dry_run=True)      # a dry run says the same, before anything is sent
    assert ex.model_ready() and served_version(pytriton) == "1"
    no_token = TritonRepository(pytriton, "tiny")
    with pytest.raises(ActionFailed, match=r"Triton refused POST /v2/repository/index: 403 .*triton-access-token"):
        no_token.current()


TRITON_CONFIG = """backend: "python"
max_batch_size: 64
input [ { name: "x" data_type: TYPE_FP64 dims: [ 4 ] } ]
output [ { name: "predict" data_type: TYPE_INT64 dims: [ 1 ] } ]
version_policy: { all: {} }
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


@pytest.fixture(scope="module")
def triton() -> Iterator[str]:
    """tritonserver itself (the binary PyTriton ships) in explicit model-control mode, with a model repository
    holding versions 1 and 2 of tiny as Python-backend models; both load (version policy ``all``)."""
    try:
        py = launch.venv("pytriton")
    except launch.Unavailable as e:
        unavailable(str(e))
    site = next(py.glob("lib/python3*/site-packages"), None)
    if site is None or not (site / "pytriton/tritonserver/bin/tritonserver").exists():
        unavailable("the pytriton venv has no tritonserver binary")
    work = Path(tempfile.mkdtemp(prefix="incidentd-triton-exec-"))
    ts = work / "tritonserver"
    shutil.copytree(site / "pytriton/tritonserver", ts, ignore=shutil.ignore_patterns("python_backend_stubs"))
    pyver = "3.12"
    shutil.copy(site / f"pytriton/tritonserver/python_backend_stubs/{pyver}/triton_python_backend_stub",
                ts / "backends/python/triton_python_backend_stub")
    repo = work / "repo"
    for v in ("1", "2"):
        (repo / "tiny" / v).mkdir(parents=True)
        shutil.copy(launch.HERE / "triton_python_model.py", repo / "tiny" / v / "model.py")
    (repo / "tiny/config.pbtxt").write_text(TRITON_CONFIG)
    libdir = launch.settings().get("INCIDENTD_PYTRITON_LIBDIR", "")
    http, grpc, metrics = launch.free_port(), launch.free_port(), launch.free_port()
    env = {"LD_LIBRARY_PATH": ":".join(p for p in (str(site / "nvidia_pytriton.libs"), libdir,
                                                   os.environ.get("LD_LIBRARY_PATH", "")) if p),
           "PATH": f"{py}/bin:{os.environ.get('PATH', '')}"}
    proc, log = launch._spawn([str(ts / "bin/tritonserver"), f"--model-repository={repo}",
                               "--model-control-mode=explicit", "--load-model=tiny",
                               f"--backend-directory={ts / 'backends'}", "--http-address=127.0.0.1",
                               f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
                               f"--metrics-port={metrics}", "--allow-gpu-metrics=false"], work, env)
    s = launch.Served("triton", f"http://127.0.0.1:{http}", "", "v2", "tiny", proc, work, log)
    try:
        launch._wait(f"{s.base_url}/v2/models/tiny/versions/2/ready", proc, log)
    except launch.Unavailable as e:
        launch.stop(s)
        unavailable(f"tritonserver could not start: {e}")
    yield s.base_url
    launch.stop(s)


def test_triton_rollback_loads_known_good_and_unloads_bad(triton: str) -> None:
    from remediation.executors_oip import TritonRepository

    ex = TritonRepository(triton, "tiny")
    assert ex.current() == "2" and ex.ready_versions() == ["1", "2"] and served_version(triton) == "2"
    dry = ex.rollback_to("1", dry_run=True)
    assert dry.dry_run and dry.after == "1" and ex.ready_versions() == ["1", "2"]
    assert json.loads(dry.requests[0].body["parameters"]["config"])["version_policy"] == {
        "specific": {"versions": [1]}}
    out = ex.rollback_to("1")
    assert (out.before, out.after, out.noop) == ("2", "1", False)
    assert ex.ready_versions() == ["1"] and not ex.version_ready("2") and served_version(triton) == "1"
    assert ex.rollback_to("1").noop
    with pytest.raises(ActionFailed, match=r"Triton refused POST /v2/repository/models/tiny/load: 400 .*at least "
                                           r"one version must be available under the version policy"):
        ex.rollback_to("7")
    assert served_version(triton) == "1"                 # a refused load leaves the serving version in place
    assert ex.rollback("2") == ("1", "2") and served_version(triton) == "2"


def test_triton_restart_reloads_one_model(triton: str) -> None:
    from remediation.executors_oip import TritonRepository

    ex = TritonRepository(triton, "tiny")
    before = ex.ready_versions()
    dry = ex.restart_model(dry_run=True)
    assert dry.dry_run and [r.url.rsplit("/", 1)[1] for r in dry.requests] == ["unload", "load"]
    out = ex.restart_model()
    assert out.before == out.after == before[-1] and ex.ready_versions() == before and ex.model_ready()
    assert ex.restart() == (1, 2)


# ---------------------------------------------------------------- the runner, as the service wires it


def _runner(tmp_path: Path, base: str, repo: Path, known_good: str, mode: str = "auto"):  # type: ignore[no-untyped-def]
    import time

    from diagnosis.lifecycle import open_incident
    from diagnosis.types import FaultDomain, Hypothesis
    from incidentd.config import Settings
    from incidentd.server_control import server_control
    from incidentd.store import Store
    from remediation.actions import ActionContext
    from remediation.policy import Policy
    from remediation.runner import ActionRunner
    from remediation.types import ActionKind, ActionMode

    settings = Settings.load(None, remediation={"executor": {"kind": "mlserver", "url": base, "model": "tiny",
                                                             "repository_dir": str(repo), "known_good": known_good}})
    store = Store(tmp_path / "db.sqlite")
    built = server_control(settings.remediation.executor, store, active=store.models_with_active_incidents)
    ctx = ActionContext(built.admin, built.executor, None, built.executor, "{version}")
    rem = ActionRunner(store, Policy(verify_seconds=1.0, default_mode=ActionMode(mode)), ctx)
    hyp = Hypothesis(FaultDomain.MODEL, "model.bad_version", 0.9, ActionKind.ROLLBACK, "2 is worse",
                     evidence_ids=("ev",), rules=("accuracy-drop-after-deploy",))
    inc, entries = open_incident("tiny", [hyp], ["ev"], time.time(), [])
    store.save_incident(inc, entries)
    return rem, inc, hyp


def _settled(rem, statuses):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec = rem.records()[0]
        if rec.status in statuses:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"action stayed {rem.records()[0].status}")


def test_mlserver_rollback_through_the_runner_is_audited(tmp_path: Path, mlserver: tuple[str, Path]) -> None:
    import time

    from remediation.types import ActionStatus

    base, repo = mlserver
    rem, inc, hyp = _runner(tmp_path / "dry", base, repo, "1", mode="dry-run")
    _, rec = rem.consider(inc, hyp, ["accuracy"], time.time())
    assert rec is not None and rec.status is ActionStatus.DRY_RUN and served_version(base) == "2"

    rem, inc, hyp = _runner(tmp_path / "auto", base, repo, "1")
    _, rec = rem.consider(inc, hyp, ["accuracy"], time.time())
    assert rec is not None and rec.plan is not None and dict(rec.plan.params)["to"] == "1"
    done = _settled(rem, {ActionStatus.VERIFYING, ActionStatus.FAILED})
    assert done.status is ActionStatus.VERIFYING and done.result is not None
    assert dict(done.result.data) == {"noop": False, "from": "2", "to": "1"} and served_version(base) == "1"
    rem.close()
    MLServerRepository(base, "tiny", repository_dir=repo).rollback("2")


def test_mlserver_refusal_is_named_in_the_audit_record(tmp_path: Path, mlserver: tuple[str, Path]) -> None:
    import time

    from remediation.types import ActionStatus

    base, repo = mlserver
    rem, inc, hyp = _runner(tmp_path, base, repo, "7")
    rem.consider(inc, hyp, ["accuracy"], time.time())
    rec = _settled(rem, {ActionStatus.FAILED})
    failed = [a for a in rec.audit if a.event == "execute_failed"]
    assert failed and "version 7 of tiny is not in the model repository" in failed[0].data["error"]
    assert served_version(base) == "2"
    rem.close()
