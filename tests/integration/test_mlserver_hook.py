"""The demo's MLServer fault hook (incidentd/demo_servers/mlserver_digits.py), run in MLServer's own venv:
a fault lives in the model instance it was injected into, so a reload (incidentd's restart) ends it."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from incidentd.demo_servers.mlserver import RUNTIME, MLServerUnavailable, find_venv
from tests.integration.conftest import in_ci

SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from mlserver_digits import FaultState
    path, out = sys.argv[2], {}
    t0 = 1000.0                                      # load and injection times, as the clock would give them
    before = FaultState(path, loaded_at=t0)
    json.dump({"fault": "memory_balloon", "params": {"megabytes": 8, "step_megabytes": 4,
               "interval_seconds": 0.0}, "at": t0 + 1}, open(path, "w"))
    out["seen"] = before.refresh().get("fault")
    before._spinners[0].join(5)
    out["held_mb"] = sum(len(b) for b in before._held) / 2**20
    after = FaultState(path, loaded_at=t0 + 2)       # the instance a reload makes
    out["after_reload"] = after.refresh()
    before.stop()
    out["held_after_unload"] = len(before._held)
    json.dump({"fault": "latency_creep", "params": {"ramp": 1.0, "max_seconds": 0.25}, "at": time.time() - 10},
              open(path, "w"))
    creep = FaultState(path, loaded_at=time.time() - 20)
    creep.refresh()
    out["creep"] = creep.added_latency()
    print(json.dumps(out))
""")


def test_a_fault_lives_in_its_instance_and_a_reload_ends_it(tmp_path: Path) -> None:
    try:
        venv = find_venv()
    except MLServerUnavailable as e:
        if in_ci():
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    folder = tmp_path / "model"                 # as in MLServer's model folder: the runtime file alone
    folder.mkdir()
    shutil.copy(RUNTIME, folder / RUNTIME.name)
    r = subprocess.run([str(venv / "bin/python"), "-c", SCRIPT, str(folder), str(tmp_path / "fault.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["seen"] == "memory_balloon" and out["held_mb"] == 8       # grew to its size, pages written
    assert out["after_reload"] == {}                                      # injected before this load: gone
    assert out["held_after_unload"] == 0                                  # unload frees what it held
    assert out["creep"] == 0.25                                           # grown past its cap: capped
