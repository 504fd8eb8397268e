"""Actions on a real model server: dry-run changes nothing, execution fixes, a retry does not apply twice."""
from __future__ import annotations

import httpx
import pytest

from remediation.actions import ACTIONS, ActionContext
from remediation.executors import ModelServerAdmin
from remediation.types import ActionKind
from tests.model_server.conftest import start_server, supervised_server


@pytest.fixture()
def server(registry_dir):
    s = start_server(registry_dir)
    yield s
    s.stop()


def predict_finite(url: str) -> bool:
    from incidentd.model_server.model import load_digits_split

    x = load_digits_split().x_holdout[:50]
    r = httpx.post(url + "/predict", json={"inputs": x.tolist()}, timeout=10)
    return r.status_code == 200 and all(p is not None for p in r.json()["predictions"])


def test_clamp_dry_run_changes_nothing_then_repairs_and_is_idempotent(server):
    ctx = ActionContext(ModelServerAdmin(server.url))
    httpx.post(server.url + "/admin/faults", json={"fault": "nonfinite_weights", "params": {"count": 8}}).raise_for_status()
    assert not predict_finite(server.url)
    clamp = ACTIONS[ActionKind.CLAMP]
    plan = clamp.plan(ctx, "digits")
    assert not plan.noop and "8 non-finite" in plan.description
    clamp.simulate(ctx, plan)
    assert not predict_finite(server.url), "a dry run must not touch the weights"
    first = clamp.execute(ctx, plan)
    assert first["changed"] is True
    assert predict_finite(server.url)
    weights = ctx.admin.weights()
    assert sum(t["nonfinite"] for t in weights["tensors"]) == 0
    assert clamp.execute(ctx, plan)["changed"] is False, "a retried clamp must change nothing"


def test_rollback_switches_to_known_good_and_is_a_noop_when_already_there(server):
    ctx = ActionContext(ModelServerAdmin(server.url))
    rollback = ACTIONS[ActionKind.ROLLBACK]
    assert rollback.plan(ctx, "digits").noop, "already on the known-good version"
    ctx.admin.load("v2")
    plan = rollback.plan(ctx, "digits")
    assert plan.params == {"from": "v2", "to": "v1"} and not plan.noop
    res = rollback.execute(ctx, plan)
    assert res["noop"] is False and ctx.admin.versions()["current"] == "v1"
    assert rollback.execute(ctx, plan)["noop"] is True, "a retried rollback must not switch again"
    assert rollback.revert(ctx, plan, res) is not None
    assert ctx.admin.versions()["current"] == "v2"


def test_unknown_version_is_a_clear_non_retryable_failure(server):
    from remediation.types import ActionFailed

    admin = ModelServerAdmin(server.url)
    with pytest.raises(ActionFailed) as e:
        admin.load("v999")
    assert not e.value.retryable and "404" in str(e.value)


def test_restart_replaces_the_process_once(registry_dir, tmp_path):
    proc, url = supervised_server(registry_dir, tmp_path / "ms.log")
    proc.start()
    try:
        ctx = ActionContext(ModelServerAdmin(url), proc)
        restart = ACTIONS[ActionKind.RESTART]
        plan = restart.plan(ctx, "digits")
        old = proc.pid
        res = restart.execute(ctx, plan)
        assert res["old_pid"] == old and res["new_pid"] != old
        assert httpx.get(url + "/healthz").status_code == 200
        assert restart.execute(ctx, plan)["noop"] is True, "the same plan must not restart twice"
    finally:
        proc.stop()
    assert proc.pid is None


def test_admin_refuses_wildcard_targets():
    with pytest.raises(ValueError):
        ModelServerAdmin("")
    with pytest.raises(ValueError):
        ModelServerAdmin("http://*:8081")


