"""Settings of the third-party executors, and the known-good record incidentd keeps for them."""
from __future__ import annotations

from pathlib import Path

import pytest

from incidentd.config import Settings
from incidentd.errors import ConfigError
from incidentd.server_control import executor_for, server_control
from incidentd.store import Store
from remediation.executors_oip import MLServerRepository, TritonRepository
from remediation.executors_servers import KnownGoodTracker
from remediation.executors_torchserve import TorchServeManagement


def executor(**ex: object) -> Settings:
    return Settings.load(None, remediation={"executor": ex})


def test_each_kind_builds_its_executor() -> None:
    ml = executor_for(executor(kind="mlserver", url="http://m:8080", model="tiny",
                               repository_dir="/models").remediation.executor)
    assert isinstance(ml, MLServerRepository) and ml.repository_dir == Path("/models")
    tr = executor_for(executor(kind="triton", url="http://t:8000", model="tiny",
                               headers={"triton-access-token": "s"}).remediation.executor)
    assert isinstance(tr, TritonRepository) and tr.headers == {"triton-access-token": "s"}
    ts = executor_for(executor(kind="torchserve", url="http://t:8081", model="tiny").remediation.executor)
    assert isinstance(ts, TorchServeManagement) and ts.base_url == "http://t:8081"


@pytest.mark.parametrize(("ex", "message"), [
    ({"kind": "mlserver", "model": "tiny"}, "executor kind 'mlserver' needs url"),
    ({"kind": "torchserve", "url": "http://t:8081"}, "executor kind 'torchserve' needs model"),
    ({"kind": "kserve", "namespace": "ml"}, "executor kind 'kserve' needs inferenceservice"),
    ({"kind": "kserve", "namespace": "ml", "inferenceservice": "a*"}, "wildcards and label selectors are refused"),
    ({"kind": "triton", "url": "t:8000", "model": "tiny"}, "is not an http\\(s\\) URL"),
    ({"kind": "triton", "url": "http://t:8000", "model": "tiny", "repository_dir": "/m"},
     "repository_dir applies to executor kind 'mlserver' only"),
])
def test_incomplete_settings_are_refused_at_start(ex: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        executor(**ex)


def test_known_good_is_kept_in_the_store_with_since_and_why(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db")
    t = [1000.0]
    tr = KnownGoodTracker(store, "mlserver", "tiny", promote_after=60, clock=lambda: t[0])
    assert tr.get() is None
    assert tr.observe("2", healthy=True) is None              # serving starts the clock
    t[0] = 1030
    assert tr.observe("2", healthy=False) is None             # an incident restarts it
    t[0] = 1080
    assert tr.observe("2", healthy=True) is None              # 50 s clean: not yet
    t[0] = 1091
    kg = tr.observe("2", healthy=True)
    assert kg is not None and (kg.version, kg.since) == ("2", 1091) and kg.why == "served 61s without an incident"
    t[0] = 1100
    assert tr.observe("3", healthy=True) == kg                # a new version does not replace it at once
    store.close()
    again = KnownGoodTracker(Store(tmp_path / "i.db"), "mlserver", "tiny")
    assert again.get() == kg                                  # persisted


def test_configured_known_good_seeds_the_record_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db")
    ex = executor(kind="torchserve", url="http://127.0.0.1:9", model="tiny", known_good="1.0").remediation.executor
    built = server_control(ex, store)
    kg = built.tracker.get()
    assert kg is not None and kg.version == "1.0" and kg.why.startswith("configured")
    built.tracker.mark("2.0", "verified act-1")
    kept = server_control(ex, store).tracker.get()
    assert kept is not None and kept.version == "2.0"         # a restart keeps what was learned


def test_clamp_and_unreachable_servers_are_named(tmp_path: Path) -> None:
    from remediation.types import ActionFailed

    ex = executor(kind="torchserve", url="http://127.0.0.1:9", model="tiny").remediation.executor
    admin = server_control(ex, Store(tmp_path / "i.db")).admin
    with pytest.raises(ActionFailed, match="clamp is not available on torchserve"):
        admin.clamp(dry_run=True)
    with pytest.raises(ActionFailed, match=r"TorchServe at http://127.0.0.1:9 unreachable for GET /models/tiny"):
        admin.versions()


def test_the_runtime_acts_through_the_configured_server(tmp_path: Path) -> None:
    from incidentd.runtime import Runtime
    from remediation.executors_servers import ServerControlAdmin

    settings = Settings.load(None, database=tmp_path / "i.db", remediation={"executor": {
        "kind": "torchserve", "url": "http://127.0.0.1:9", "model": "tiny", "known_good": "1.0"}})
    rt = Runtime(settings)
    try:
        ctx = rt.remediator.ctx
        assert ctx is not None and isinstance(ctx.admin, ServerControlAdmin)
        assert isinstance(ctx.process, TorchServeManagement) and ctx.rollout is ctx.process
        assert ctx.release("1.0") == "1.0" and rt.loop.admin is ctx.admin
        kg = ctx.admin.tracker.get()
        assert kg is not None and kg.version == "1.0"
    finally:
        rt.stop()


class FakeServing:
    """What serves, set by the test (the executors themselves are tested against real servers)."""

    kind, model, base_url, target, pid, command = "torchserve", "tiny", "http://127.0.0.1:9", "ts tiny", None, ["x"]

    def __init__(self) -> None:
        self.version = "2.0"

    def current(self) -> str:
        return self.version


def test_a_version_serving_when_an_action_is_verified_becomes_known_good(tmp_path: Path) -> None:
    from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus

    store = Store(tmp_path / "i.db")
    ex = executor(kind="torchserve", url="http://127.0.0.1:9", model="tiny",
                  promote_after_seconds=3600).remediation.executor
    serving, t = FakeServing(), [1000.0]
    built = server_control(ex, store, active=lambda: ["tiny"], executor=serving,  # type: ignore[arg-type]
                           clock=lambda: t[0])
    assert built.admin.versions()["known_good"] is None       # 2.0 serves, with an incident
    started = built.tracker.serving_since()
    assert started is not None and started[0] == "2.0"
    store.save_action(ActionRecord(id="act-1", incident_id="inc-1", model="tiny", kind=ActionKind.RESTART,
                                   mode=ActionMode.AUTO, status=ActionStatus.VERIFIED, reason="r",
                                   idempotency_key="k", created_at=1001, verified_at=1005))
    t[0] = 1006
    v = built.admin.versions()                                 # the restart was verified while 2.0 served
    assert (v["known_good"], v["known_good_why"]) == ("2.0", "verified act-1")
    t[0] = 1010
    serving.version = "3.0"
    built.admin.versions()
    assert built.admin.versions()["known_good"] == "2.0"      # act-1 was verified before 3.0 served
