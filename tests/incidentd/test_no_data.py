"""No data is a state: a dead sidecar is evidence of its own, and missing data never reads as healthy.

The target is a real HTTP server scraped by the service's own Scraper; time is injected, so the test
neither sleeps nor depends on the date.
"""
from __future__ import annotations

import numpy as np
import pytest

from diagnosis.catalog import CatalogSettings, default_catalog
from diagnosis.rules import DEFAULT_PACK, RuleEngine
from diagnosis.signals import SignalState
from diagnosis.types import ActionKind, FaultDomain, IncidentStatus
from incidentd.config import Settings
from incidentd.pipeline import DetectionLoop
from incidentd.store import Store
from incidentd.tsdb import EmbeddedStore, Scraper
from tests.incidentd.metrics_target import Sidecar


class World:
    def __init__(self, tmp_path) -> None:
        self.sidecar = Sidecar()
        self.settings = Settings(database=tmp_path / "db.sqlite", scrape_interval_seconds=1,
                                 detection={"resolve_after_seconds": 5, "accuracy_window_seconds": 15})
        self.metrics = EmbeddedStore(3600, 5000)
        self.scraper = Scraper(self.metrics, [self.sidecar.url], timeout=2.0)
        self.store = Store(self.settings.database)
        specs = default_catalog(CatalogSettings(accuracy_window_seconds=15, counter_window_seconds=8))
        self.loop = DetectionLoop(self.settings, self.metrics, self.store, RuleEngine.load([DEFAULT_PACK]),
                                  specs, remediator=None, step=1.0)
        self.rng = np.random.default_rng(0)
        self.t = 1_000_000.0
        self.labeled = self.correct = 0
        self.accuracy = 0.96

    def tick(self, seconds: int = 1) -> None:
        """One scrape and one detection cycle per second."""
        for _ in range(seconds):
            self.t += 1
            self.labeled += 40
            self.correct += int(self.rng.binomial(40, self.accuracy))
            m = 'model="digits",version="v1"'
            self.sidecar.body = "\n".join([
                f"model_up{{{m}}} 1",
                f'model_latency_seconds{{{m},quantile="0.9"}} {0.004 + self.rng.normal(0, 0.0004)}',
                f"model_predictions_labeled_total{{{m}}} {self.labeled}",
                f"model_predictions_correct_total{{{m}}} {self.correct}",
                f"model_nonfinite_outputs_total{{{m}}} 0",
                f"model_weights_nonfinite{{{m}}} 0",
            ]) + "\n"
            self.scraper.scrape_once(self.t)
            self.loop.cycle(self.t)

    def state(self, signal: str) -> SignalState:
        return self.loop.last_readings["digits"][signal].state


@pytest.fixture()
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.scraper.close()
    w.store.close()
    try:
        w.sidecar.kill()
    except OSError:
        pass


def test_a_dead_sidecar_is_monitoring_down_within_two_cycles_and_never_a_model_action(world):
    world.tick(40)
    assert world.state("target_down") is SignalState.INACTIVE
    assert world.state("monitoring_down") is SignalState.INACTIVE
    assert world.store.incidents() == []
    world.sidecar.kill()
    world.tick(2)                               # two cycles, each after a failed scrape
    assert world.state("monitoring_down") is SignalState.ACTIVE
    # What the model did is unknown now: no signal of it reads as healthy.
    for name in ("target_down", "latency", "accuracy", "nonfinite_outputs", "weights_nonfinite"):
        assert world.state(name) is SignalState.NO_DATA, name
    (inc,) = world.store.incidents()
    assert inc.top.root_cause == "hardware.monitoring_down" and inc.top.domain is FaultDomain.HARDWARE
    assert {h.recommended_action for h in inc.hypotheses} == {ActionKind.NOTIFY}, "never a model action"
    assert "digits" in world.loop.cycle(world.t).active_signals


def test_an_incident_does_not_resolve_while_its_signals_have_no_data(world):
    world.tick(60)
    world.accuracy = 0.5
    world.tick(25)
    (inc,) = world.store.incidents()
    assert inc.status is IncidentStatus.OPEN
    # The metrics stop arriving (the target answers nothing about the model) for far longer than
    # resolve_after: the accuracy drop is not seen to end, so the incident stays open.
    world.sidecar.body = ""
    for _ in range(30):
        world.t += 1
        world.scraper.scrape_once(world.t)
        world.loop.cycle(world.t)
    assert world.state("accuracy") is SignalState.NO_DATA
    assert world.store.incident(inc.id).status is not IncidentStatus.RESOLVED
    # Fresh data showing the model healthy resolves it.
    world.accuracy = 0.96
    world.tick(60)
    assert world.store.incident(inc.id).status is IncidentStatus.RESOLVED
