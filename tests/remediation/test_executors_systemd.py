"""SystemdUnit against systemctl's command-line contract.

This machine has a real ``systemctl`` (systemd 252) but systemd is not PID 1, and a user manager cannot
start here (no delegated cgroup), so no unit can really be restarted. What is tested instead:
- the exact argv, and that nothing else runs (a recording runner);
- parsing of ``systemctl show`` output in the KEY=VALUE format systemd prints (samples below);
- the whole subprocess path (PATH lookup, no shell, exit codes, stderr) against a stand-in ``systemctl``
  executable that keeps unit state in a file;
- the real ``systemctl`` binary here: its "cannot talk to systemd" failure surfaces as ActionFailed.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from remediation.executors import LocalProcess
from remediation.executors_systemd import (
    CommandResult,
    RestartExecutor,
    SystemdUnit,
    UnitStatus,
    parse_show,
    validate_unit,
)
from remediation.types import ActionFailed

# systemctl show prints the Service interface's properties before the Unit interface's.
SHOW_RUNNING = """MainPID=812
NRestarts=0
LoadState=loaded
ActiveState=active
SubState=running
InvocationID=3f6e1d0c2b7a4e5f9a8b7c6d5e4f3a2b
"""
SHOW_NOT_FOUND = """MainPID=0
NRestarts=0
LoadState=not-found
ActiveState=inactive
SubState=dead
InvocationID=
"""
SHOW_FAILED = """MainPID=0
NRestarts=5
LoadState=loaded
ActiveState=failed
SubState=failed
InvocationID=9d1c0e7b6a5f4e3d2c1b0a9f8e7d6c5b
"""


class Recorder:
    """A runner that answers from a script of (argv prefix -> result) and records every argv."""

    def __init__(self, answers: list[tuple[str, int, str, str]]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        verb, rc, out, err = self.answers.pop(0)
        assert verb in argv, (verb, argv)
        return CommandResult(tuple(argv), rc, out, err)


def show(pid: int, inv: str, state: str = "active", sub: str = "running", nr: int = 0) -> str:
    return (f"MainPID={pid}\nNRestarts={nr}\nLoadState=loaded\nActiveState={state}\nSubState={sub}\n"
            f"InvocationID={inv}\n")


@pytest.mark.parametrize("name, canonical", [
    ("model-server", "model-server.service"),
    ("model-server.service", "model-server.service"),
    ("incidentd-model@digits.service", "incidentd-model@digits.service"),
    ("a:b_c.d-e.service", "a:b_c.d-e.service"),
])
def test_valid_unit_names(name: str, canonical: str) -> None:
    assert validate_unit(name) == canonical


@pytest.mark.parametrize("name", ["", "  ", "*", "model-*.service", "model?.service", "model[12].service",
                                  "--all", "-H host", "model server.service", "../etc/passwd",
                                  "model@.service", "foo.socket", "foo.target", "a;reboot", "x" * 300,
                                  "model-server.service extra"])
def test_invalid_unit_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        SystemdUnit(name)


def test_exact_argv_system_and_user_scope() -> None:
    assert SystemdUnit("m").show_argv() == [
        "systemctl", "show", "-p", "LoadState,ActiveState,SubState,MainPID,NRestarts,InvocationID", "m.service"]
    assert SystemdUnit("m").restart_argv() == ["systemctl", "--no-ask-password", "restart", "m.service"]
    u = SystemdUnit("m", scope="user")
    assert u.restart_argv() == ["systemctl", "--user", "--no-ask-password", "restart", "m.service"]
    assert u.show_argv()[:3] == ["systemctl", "--user", "show"]
    with pytest.raises(ValueError):
        SystemdUnit("m", scope="global")  # type: ignore[arg-type]


def test_parse_real_show_samples() -> None:
    s = parse_show("m.service", SHOW_RUNNING)
    assert (s.load_state, s.active_state, s.sub_state, s.main_pid, s.n_restarts) == \
        ("loaded", "active", "running", 812, 0)
    assert s.running and s.invocation_id.startswith("3f6e")
    nf = parse_show("m.service", SHOW_NOT_FOUND)
    assert nf.load_state == "not-found" and nf.main_pid is None and not nf.running and nf.invocation_id == ""
    f = parse_show("m.service", SHOW_FAILED)
    assert f.active_state == "failed" and f.n_restarts == 5 and not f.running
    # order does not matter; unknown keys and blank lines are ignored
    shuffled = "\n".join(reversed(SHOW_RUNNING.splitlines())) + "\nFoo=bar\n\n"
    assert parse_show("m.service", shuffled) == s
    with pytest.raises(ActionFailed):
        parse_show("m.service", "Failed to get properties: Access denied\n")


def test_restart_runs_show_restart_show_and_returns_pids() -> None:
    rec = Recorder([("show", 0, SHOW_RUNNING, ""), ("restart", 0, "", ""),
                    ("show", 0, show(913, "aaaa"), "")])
    unit = SystemdUnit("model-server", runner=rec, sleep=lambda s: None)
    assert unit.restart() == (812, 913)
    assert [c[1] if c[1] != "--no-ask-password" else c[2] for c in rec.calls] == ["show", "restart", "show"]
    assert rec.calls[1] == ["systemctl", "--no-ask-password", "restart", "model-server.service"]


def test_restart_is_a_noop_when_the_pid_changed_since_the_plan() -> None:
    rec = Recorder([("show", 0, show(999, "bbbb"), "")])
    unit = SystemdUnit("model-server", runner=rec)
    planned = parse_show(unit.unit, SHOW_RUNNING)
    out = unit.restart_once(planned)
    assert out.noop and out.after.main_pid == 999
    assert not any("restart" in c for c in rec.calls)


def test_restart_after_a_crash_is_not_mistaken_for_already_restarted() -> None:
    planned = parse_show("model-server.service", SHOW_RUNNING)
    rec = Recorder([("show", 0, show(0, "", "inactive", "dead"), ""), ("restart", 0, "", ""),
                    ("show", 0, show(1001, "cccc"), "")])
    out = SystemdUnit("model-server", runner=rec, sleep=lambda s: None).restart_once(planned)
    assert not out.noop and out.after.main_pid == 1001


def test_refuses_unit_that_is_not_loaded() -> None:
    rec = Recorder([("show", 0, SHOW_NOT_FOUND, "")])
    with pytest.raises(ActionFailed, match="not-found"):
        SystemdUnit("nope", runner=rec).restart()
    assert len(rec.calls) == 1


def test_restart_failure_and_failed_state_are_reported() -> None:
    rec = Recorder([("show", 0, SHOW_RUNNING, ""),
                    ("restart", 1, "", ("Job for m.service failed because the control process exited "
                                        "with error code.\n"))])
    with pytest.raises(ActionFailed, match="control process exited") as ei:
        SystemdUnit("m", runner=rec).restart()
    assert not ei.value.retryable
    rec = Recorder([("show", 0, SHOW_RUNNING, ""), ("restart", 0, "", ""), ("show", 0, SHOW_FAILED, "")])
    with pytest.raises(ActionFailed, match="failed after restart"):
        SystemdUnit("m", runner=rec).restart()


def test_waits_for_the_new_instance_then_times_out() -> None:
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    # activating with the old pid, then the new pid
    rec = Recorder([("show", 0, SHOW_RUNNING, ""), ("restart", 0, "", ""),
                    ("show", 0, show(0, "d", "activating", "start"), ""), ("show", 0, show(1200, "d"), "")])
    unit = SystemdUnit("m", runner=rec, sleep=sleep, monotonic=lambda: clock[0], settle_timeout=5)
    assert unit.restart() == (812, 1200)
    # never comes back: retryable failure after settle_timeout
    rec = Recorder([("show", 0, SHOW_RUNNING, ""), ("restart", 0, "", "")]
                   + [("show", 0, show(0, "e", "activating", "start"), "")] * 20)
    unit = SystemdUnit("m", runner=rec, sleep=sleep, monotonic=lambda: clock[0], settle_timeout=2,
                       poll_interval=0.5)
    with pytest.raises(ActionFailed, match="not back after restart") as ei:
        unit.restart()
    assert ei.value.retryable


def test_protocol_is_shared_with_local_process(tmp_path: Path) -> None:
    unit = SystemdUnit("m", runner=Recorder([("show", 0, SHOW_RUNNING, "")] * 3))
    assert isinstance(unit, RestartExecutor)
    assert unit.command == ["systemctl", "--no-ask-password", "restart", "m.service"]
    assert isinstance(LocalProcess(["true"], "http://127.0.0.1:1/healthz", tmp_path / "log"), RestartExecutor)


FAKE_SYSTEMCTL = r'''#!{python}
"""Stand-in for systemctl: same argv contract, unit state kept in $FAKE_SYSTEMD_STATE (JSON)."""
import json, os, sys
state_path = os.environ["FAKE_SYSTEMD_STATE"]
st = json.load(open(state_path))
args = sys.argv[1:]
with open(state_path + ".argv", "a") as f:
    f.write(json.dumps(args) + "\n")
user = args[:1] == ["--user"]
args = [a for a in args if a not in ("--user", "--no-ask-password")]
if st.get("no_manager"):
    sys.stderr.write("System has not been booted with systemd as init system (PID 1). Can't operate.\n"
                     "Failed to connect to bus: Host is down\n")
    sys.exit(1)
verb, rest = args[0], args[1:]
if verb == "show":
    assert rest[0] == "-p"
    unit = rest[2]
    u = st["units"].get(unit)
    props = {"MainPID": u["pid"] if u else 0, "NRestarts": 0, "LoadState": "loaded" if u else "not-found",
             "ActiveState": "active" if u else "inactive", "SubState": "running" if u else "dead",
             "InvocationID": u["inv"] if u else ""}
    for k in ["MainPID", "NRestarts", "LoadState", "ActiveState", "SubState", "InvocationID"]:
        if k in rest[1].split(","):
            print(f"{k}={props[k]}")
elif verb == "restart":
    unit = rest[0]
    if unit not in st["units"]:
        sys.stderr.write(f"Failed to restart {unit}: Unit {unit} not found.\n")
        sys.exit(5)
    st["units"][unit]["pid"] += 1
    st["units"][unit]["inv"] = "%032x" % st["units"][unit]["pid"]
    json.dump(st, open(state_path, "w"))
else:
    sys.exit(1)
'''


@pytest.fixture()
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "systemctl"
    exe.write_text(FAKE_SYSTEMCTL.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"units": {"model-server.service": {"pid": 4000, "inv": "a" * 32}}}))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD_STATE", str(state))
    return state


def test_subprocess_path_end_to_end(fake_systemctl: Path) -> None:
    unit = SystemdUnit("model-server", sleep=lambda s: None)
    planned = unit.status()
    assert planned == UnitStatus("model-server.service", "loaded", "active", "running", 4000, 0, "a" * 32)
    out = unit.restart_once(planned)
    assert (out.noop, out.before.main_pid, out.after.main_pid) == (False, 4000, 4001)
    # retried with the same plan: the unit already restarted, nothing runs twice
    again = unit.restart_once(planned)
    assert again.noop and again.after.main_pid == 4001
    argvs = [json.loads(x) for x in Path(str(fake_systemctl) + ".argv").read_text().splitlines()]
    assert [a for a in argvs if "restart" in a] == [["--no-ask-password", "restart", "model-server.service"]]
    with pytest.raises(ActionFailed, match="not-found"):
        SystemdUnit("other").restart()


def test_subprocess_path_without_a_manager(fake_systemctl: Path) -> None:
    st = json.loads(fake_systemctl.read_text())
    fake_systemctl.write_text(json.dumps({**st, "no_manager": True}))
    with pytest.raises(ActionFailed, match="Failed to connect to bus") as ei:
        SystemdUnit("model-server").status()
    assert ei.value.retryable


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="no systemctl binary on this host")
def test_real_systemctl_binary_failure_is_a_clear_action_failure() -> None:
    """On a host where systemd runs this reads a real unit's state; elsewhere it must fail clearly."""
    unit = SystemdUnit("incidentd-test-nonexistent-unit")
    try:
        s = unit.status()
    except ActionFailed as e:
        assert "systemctl show incidentd-test-nonexistent-unit.service failed" in str(e)
        return
    assert s.load_state == "not-found" and s.main_pid is None
    with pytest.raises(ActionFailed, match="not-found"):
        unit.restart()
