"""The embedded supervisor adopts the model server a killed service left running, instead of starting a second.

Each ``LocalProcess`` made here stands for one run of the service: the child runs in its own session, so it
outlives the object (and the service) that started it; the pid file next to the log names it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from remediation.executors import LocalProcess
from tests.model_server.conftest import free_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.fixture()
def service_run(registry_dir, tmp_path):
    """Makes the supervisor of one run of the service; every child any of them started is stopped at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "incidentd.model_server", "--registry", str(registry_dir), "--port", str(port),
           "--log-level", "warning", "--device", "cpu"]
    made: list[LocalProcess] = []

    def make(command: list[str] | None = None) -> LocalProcess:
        p = LocalProcess(command or cmd, url + "/healthz", tmp_path / "ms.log", pid_file=tmp_path / "ms.pid")
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def serving_pid(p: LocalProcess) -> int:
    return int(httpx.get(p.health_url, timeout=5).json()["pid"])


def test_a_restarted_service_adopts_the_surviving_child_and_can_restart_and_stop_it(service_run, tmp_path):
    first = service_run()
    pid = first.start()
    assert json.loads((tmp_path / "ms.pid").read_text())["pid"] == pid
    second = service_run()                       # the service restarted; the first run never stopped its child
    assert second.start() == pid and second.adopted and serving_pid(second) == pid, "no second server"
    old, new = second.restart()
    assert old == pid and new != pid and not alive(pid) and serving_pid(second) == new
    assert json.loads((tmp_path / "ms.pid").read_text())["pid"] == new
    second.stop()
    assert not alive(new) and not (tmp_path / "ms.pid").exists()


def test_an_adopted_child_is_stopped_with_its_process_group(service_run):
    pid = service_run().start()
    adopter = service_run()
    adopter.start()
    adopter.stop()
    assert not alive(pid)
    with pytest.raises(httpx.TransportError):
        httpx.get(adopter.health_url, timeout=2)


def test_a_pid_file_naming_another_program_is_not_adopted(service_run, tmp_path):
    # this test process is alive, but it is not the model server: it must be neither adopted nor signalled
    (tmp_path / "ms.pid").write_text(json.dumps({"pid": os.getpid(), "command": service_run().command}))
    p = service_run()
    pid = p.start()
    assert pid != os.getpid() and not p.adopted and serving_pid(p) == pid


def test_a_pid_file_naming_a_dead_child_starts_a_new_one(service_run, tmp_path):
    first = service_run()
    dead = first.start()
    first.stop()
    (tmp_path / "ms.pid").write_text(json.dumps({"pid": dead, "command": first.command}))
    p = service_run()
    pid = p.start()
    assert pid != dead and not p.adopted and serving_pid(p) == pid


def test_a_pid_file_of_another_command_is_not_adopted(service_run, tmp_path, registry_dir):
    first = service_run()
    pid = first.start()
    other = [*first.command, "--enable-fault-injection"]
    (tmp_path / "ms.pid").write_text(json.dumps({"pid": pid, "command": other}))
    # the configured command changed (here: one flag more), so the survivor is not what was asked to run
    assert service_run(other)._adopt() is None and alive(pid)
