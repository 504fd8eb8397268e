"""One detection cycle at a time over synthetic sidecar metrics: incidents open, rank, dedup and resolve."""
from __future__ import annotations

import numpy as np
import pytest

from diagnosis.catalog import CatalogSettings, default_catalog
from diagnosis.rules import DEFAULT_PACK, RuleEngine
from diagnosis.types import ActionKind
from incidentd.config import Settings
from incidentd.pipeline import DetectionLoop
from incidentd.store import Store
from incidentd.tsdb import EmbeddedStore


class Stack:
    """Writes what a sidecar would expose into the embedded store, one scrape per second."""

    def __init__(self, tmp_path):
        self.settings = Settings(database=tmp_path / "db.sqlite", scrape_interval_seconds=1,
                                 detection={"resolve_after_seconds": 5, "accuracy_window_seconds": 15})
        self.metrics = EmbeddedStore(3600, 5000)
        self.store = Store(self.settings.database)
        specs = default_catalog(CatalogSettings(accuracy_window_seconds=15, counter_window_seconds=8))
        self.loop = DetectionLoop(self.settings, self.metrics, self.store, RuleEngine.load([DEFAULT_PACK]),
                                  specs, remediator=None, step=1.0)
        self.rng = np.random.default_rng(0)
        self.t = 1_000_000.0
        self.labeled = self.correct = 0
        self.version = "v1"
        self.drifted = 0
        self.accuracy = 0.96
        self.latency = 0.004
        self.pid: int | None = None
        self.up = True

    def tick(self, seconds: int = 1) -> None:
        for _ in range(seconds):
            self.t += 1
            self.labeled += 40
            self.correct += int(self.rng.binomial(40, self.accuracy))
            lat = self.latency + self.rng.normal(0, 0.0004)
            m, v = 'model="digits"', f'version="{self.version}"'
            if not self.up:     # the sidecar is gone too: nothing about the model arrives
                self.loop.cycle(self.t)
                continue
            pid = [f"model_process_id{{{m},{v}}} {self.pid}"] if self.pid is not None else []
            self.metrics.ingest_text("\n".join(pid + [
                f"model_up{{{m},{v}}} 1",
                f'model_latency_seconds{{{m},{v},quantile="0.9"}} {lat}',
                f"model_predictions_labeled_total{{{m},{v}}} {self.labeled}",
                f"model_predictions_correct_total{{{m},{v}}} {self.correct}",
                f"model_drifted_features{{{m},{v}}} {self.drifted}",
                f"model_weights_nonfinite{{{m},{v}}} 0",
                f"model_process_cpu_usage_ratio{{{m},{v}}} {0.05 + self.rng.normal(0, 0.005)}",
            ]) + "\n", at=self.t)
            if int(self.t) % 2 == 0:
                self.loop.cycle(self.t)


@pytest.fixture()
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.store.close()


def test_healthy_traffic_opens_nothing(stack):
    stack.tick(120)
    assert stack.store.incidents() == []


def test_drift_with_accuracy_drop_is_one_data_incident_that_resolves(stack):
    stack.tick(60)
    stack.drifted, stack.accuracy = 6, 0.75
    stack.tick(30)
    incs = stack.store.incidents()
    assert len(incs) == 1, "drift and the accuracy drop it causes are one incident"
    inc = incs[0]
    assert inc.top.domain.value == "data" and inc.top.root_cause == "data.covariate_drift"
    assert inc.top.recommended_action is ActionKind.NOTIFY
    names = {e.name for e in stack.store.evidence(inc.evidence_ids)}
    assert "input_drift" in names
    stack.drifted, stack.accuracy = 0, 0.96
    stack.tick(60)
    inc = stack.store.incident(inc.id)
    assert inc.status.value == "resolved"
    kinds = [t.kind for t in stack.store.timeline(inc.id)]
    assert kinds[0] == "opened" and kinds[-1] == "resolved"


def test_deploy_of_a_worse_version_is_blamed_on_the_version(stack):
    stack.tick(60)
    stack.version, stack.accuracy = "v2", 0.1
    stack.labeled = stack.correct = 0       # new version: its counters start at zero
    stack.tick(20)
    incs = stack.store.incidents()
    assert len(incs) == 1
    top = incs[0].top
    # No registry to ask in this test: a version not known to be good is treated as suspect.
    assert (top.domain.value, top.root_cause, top.recommended_action) == ("model", "model.bad_version",
                                                                           ActionKind.ROLLBACK)
    changes = stack.store.recent_evidence("digits", 0, kind="change")
    assert [c.name for c in changes] == ["deploy"]
    assert changes[0].attributes["from"] == "v1" and changes[0].attributes["to"] == "v2"


def test_lingering_accuracy_after_drift_ends_keeps_the_data_diagnosis(stack):
    stack.tick(60)
    stack.drifted, stack.accuracy = 6, 0.6
    stack.tick(20)
    stack.drifted = 0                   # the upstream fix lands; accuracy windows still hold bad labels
    stack.tick(6)
    stack.accuracy = 0.96
    stack.tick(60)
    (inc,) = stack.store.incidents()
    assert inc.top.root_cause == "data.covariate_drift", [h.root_cause for h in inc.hypotheses]
    assert inc.status.value == "resolved"


def restart_service(stack, restore: bool) -> None:
    """What a service restart in embedded mode leaves: the SQLite store, an empty metrics store."""
    if restore:
        stack.loop.save_baselines(stack.t)
    else:
        stack.store.put("baselines:digits", None)
    stack.metrics = EmbeddedStore(3600, 5000)
    specs = default_catalog(CatalogSettings(accuracy_window_seconds=15, counter_window_seconds=8))
    stack.loop = DetectionLoop(stack.settings, stack.metrics, stack.store, RuleEngine.load([DEFAULT_PACK]),
                               specs, remediator=None, step=1.0)


@pytest.mark.parametrize("restore", [True, False])
def test_a_restarted_service_keeps_its_learned_baselines(stack, restore):
    stack.tick(90)
    restart_service(stack, restore)
    stack.tick(4)
    stack.latency = 0.2                       # 50x the learned p90, seconds after the restart
    stack.tick(8)
    latency = stack.loop.last_readings["digits"].get("latency")
    if restore:
        assert latency is not None and latency.active, "the restored baseline judges the very first points"
        assert [i.top.root_cause for i in stack.store.incidents()] == ["hardware.cpu_contention"]
    else:
        # the control: without the saved baseline the detector is still warming up and sees nothing
        assert latency is None or not latency.active
        assert stack.store.incidents() == []


def test_a_damaged_saved_baseline_is_relearned_not_fatal(stack, caplog):
    stack.store.put("baselines:digits", {"at": stack.t, "signals": {"latency": {"detector": "garbage"},
                                                                   "accuracy": {"base_num": 5, "base_den": 1}}})
    stack.tick(60)
    assert "not restored" in caplog.text
    assert stack.loop.last_readings["digits"]["accuracy"].value > 0.9     # learned afresh, and working
    assert stack.store.incidents() == []


def test_the_service_sees_restarts_and_deploys_it_did_not_make(stack):
    stack.pid = 100
    stack.tick(10)
    stack.pid = 200                         # the server restarted (a crash loop, an operator, the kubelet)
    stack.tick(4)
    stack.version = "v2"                    # and someone deployed another version
    stack.tick(4)
    changes = stack.store.recent_evidence("digits", 0.0, kind="change")
    assert [(c.name, c.attributes.get("by")) for c in changes] == [("restart", "observed"), ("deploy", "observed")]
    assert changes[0].attributes["previous_pid"] == "100" and changes[0].attributes["pid"] == "200"
    assert (changes[1].attributes["from"], changes[1].attributes["to"]) == ("v1", "v2")


def test_a_model_gone_for_long_is_forgotten_its_baselines_saved_and_restored_when_it_returns(stack):
    stack.settings.detection.evict_after_seconds = 120
    stack.tick(90)
    assert "digits" in {m for spec in stack.loop.specs.values() for m in spec.models()}
    stack.up = False
    stack.tick(60)                          # gone, but not for long enough yet
    assert "digits" in stack.loop.last_readings
    stack.tick(120)
    assert "digits" not in stack.loop.last_readings and "digits" not in stack.loop._models
    assert not [s.name for s in stack.loop.specs.values() if "digits" in s.models()], "every signal forgot it"
    saved = stack.store.get("baselines:digits")
    assert saved is not None and "latency" in saved["signals"]
    assert stack.t - 120 <= saved["at"] <= stack.t, "written when the model was forgotten"
    stack.up = True
    stack.tick(4)
    stack.latency = 0.2                     # 50x the learned p90, seconds after it came back
    stack.tick(8)
    latency = stack.loop.last_readings["digits"].get("latency")
    assert latency is not None and latency.active, "the saved baseline judges the very first points"


def test_a_bad_release_during_a_data_shift_ranks_both_as_simultaneous_causes(stack):
    stack.tick(60)
    stack.version, stack.accuracy = "v2", 0.1
    stack.labeled = stack.correct = 0       # new version: its counters start at zero
    stack.tick(20)
    stack.drifted = 6                       # the inputs shift while the bad release is still serving
    stack.tick(20)
    (inc,) = stack.store.incidents()
    causes = {h.root_cause: h for h in inc.causes}
    assert set(causes) >= {"model.bad_version", "data.covariate_drift"}, [h.root_cause for h in inc.hypotheses]
    assert causes["model.bad_version"].recommended_action is ActionKind.ROLLBACK
    assert "accuracy" in causes["model.bad_version"].explains
    assert "input_drift" in causes["data.covariate_drift"].explains
    assert not set(causes["model.bad_version"].evidence_ids) & set(causes["data.covariate_drift"].evidence_ids)
    messages = [t.message for t in stack.store.timeline(inc.id)]
    assert any("2 simultaneous causes" in m for m in messages), messages
