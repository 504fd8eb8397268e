"""Slow faults and relative thresholds through the real catalog, rule pack and detection loop (issue 18).

Synthetic sidecar series, one scrape per second, a detection cycle every two: a leak is caught with a
forecast long before it would exhaust memory, a cache that warms up and levels off is not, and latency
thresholds follow each model (a ~3 ms model and a ~2 s model alike, and a per-model SLO).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from diagnosis.catalog import CatalogSettings, default_catalog
from diagnosis.forecast import ExhaustionSpec
from diagnosis.rules import DEFAULT_PACK, RuleEngine
from incidentd.config import Settings
from incidentd.pipeline import DetectionLoop
from incidentd.store import Store
from incidentd.tsdb import EmbeddedStore

MB = 2**20


class Stack:
    def __init__(self, tmp_path, latency: float = 0.003, models: dict | None = None, **catalog) -> None:
        self.settings = Settings(database=tmp_path / "db.sqlite", scrape_interval_seconds=1,
                                 models=models or ["digits"], detection={"resolve_after_seconds": 5})
        self.metrics = EmbeddedStore(7200, 10000)
        self.store = Store(self.settings.database)
        cfg = CatalogSettings(**{**self.settings.model_profiles(), **catalog})
        self.specs = default_catalog(cfg)
        self.loop = DetectionLoop(self.settings, self.metrics, self.store, RuleEngine.load([DEFAULT_PACK]),
                                  self.specs, remediator=None, step=1.0)
        self.rng = np.random.default_rng(0)
        self.t = 1_000_000.0
        self.latency = latency
        self.rss: Callable[[float], float] = lambda t: 300 * MB
        self.limit = 4096 * MB
        self.start = self.t

    def tick(self, seconds: int = 1) -> None:
        for _ in range(seconds):
            self.t += 1
            lat = self.latency * (1 + self.rng.normal(0, 0.05))
            rss = self.rss(self.t - self.start) + self.rng.normal(0, 0.2 * MB)
            m = 'model="digits",version="v1"'
            self.metrics.ingest_text("\n".join([
                f"model_up{{{m}}} 1",
                f'model_latency_seconds{{{m},quantile="0.9"}} {lat}',
                f"model_process_cpu_usage_ratio{{{m}}} {0.05 + self.rng.normal(0, 0.005)}",
                f"model_process_resident_memory_bytes{{{m}}} {rss}",
                f'model_process_memory_limit_bytes{{{m},source="cgroup"}} {self.limit}',
            ]) + "\n", at=self.t)
            if int(self.t) % 2 == 0:
                self.loop.cycle(self.t)

    def incidents(self):
        return self.store.incidents()


@pytest.fixture()
def make(tmp_path):
    stacks: list[Stack] = []

    def build(**kw) -> Stack:
        where = tmp_path / str(len(stacks))
        where.mkdir()
        s = Stack(where, **kw)
        stacks.append(s)
        return s

    yield build
    for s in stacks:
        s.store.close()


# ---------------------------------------------------------------- relative latency thresholds


@pytest.mark.parametrize("base", [0.003, 2.0], ids=["3ms-model", "2s-model"])
def test_a_sustained_tripling_of_p90_opens_an_incident_for_fast_and_slow_models(make, base):
    s = make(latency=base)
    s.tick(150)
    assert s.incidents() == [], "healthy traffic opened an incident"
    s.latency = base * 3.3
    s.tick(12)
    incs = s.incidents()
    assert len(incs) == 1
    assert incs[0].top.root_cause == "hardware.cpu_contention"
    ev = {e.name for e in s.store.evidence(incs[0].evidence_ids)}
    assert "latency" in ev


def test_a_fixed_floor_still_gates_when_configured(make):
    s = make(latency=0.003, latency_floor_seconds=0.05)
    s.tick(150)
    s.latency = 0.010
    s.tick(30)
    assert s.incidents() == []


def test_latency_creeping_past_the_models_slo_opens_an_incident(make):
    s = make(latency=0.004, models={"digits": {"slo": {"latency_p90_seconds": 0.008}}})
    s.tick(150)
    for _ in range(60):               # creeps to 2.5x: below the 3x relative gate, past the 8 ms SLO
        s.latency += 0.0001
        s.tick(2)
    incs = s.incidents()
    assert len(incs) == 1
    reading = s.loop.last_readings["digits"]["latency"]
    assert "SLO 0.008s breached" in reading.summary


def test_a_slow_creep_to_three_times_the_baseline_is_not_learned_as_normal(make):
    s = make(latency=0.004)
    s.tick(150)
    opened_at = None
    for i in range(300):              # +0.04 ms per second: 3x after 200 s, never a step
        s.latency += 0.00004
        s.tick(1)
        if opened_at is None and s.incidents():
            opened_at = i
    assert opened_at is not None, "a creep to 4x never opened an incident"
    assert 190 <= opened_at <= 260


def test_healthy_fast_model_with_a_noisy_p90_stays_quiet(make):
    s = make(latency=0.002)
    s.tick(400)
    assert s.incidents() == []


# ---------------------------------------------------------------- memory leaks


def test_a_leak_opens_an_incident_with_a_forecast_and_restarts_when_due(make):
    # 1 GB of headroom at 1 MB/s: exhaustion in ~17 min; action due 10 min before it
    s = make(trend_window_seconds=120, exhaustion_lead_seconds=600)
    s.limit = 1324 * MB
    s.tick(60)
    s.start = s.t
    s.rss = lambda t: 300 * MB + 1 * MB * t
    s.tick(150)
    incs = s.incidents()
    assert len(incs) == 1
    inc = incs[0]
    assert inc.top.root_cause == "hardware.memory_leak"
    assert inc.top.recommended_action == "notify", "not due yet: the incident opens, the restart waits"
    assert "cgroup limit" in inc.top.explanation and "reached in" in inc.top.explanation
    spec = next(sp for sp in s.specs if sp.name == "memory_leak")
    assert isinstance(spec, ExhaustionSpec)
    fc = spec.forecast("digits")
    assert fc is not None and fc.slope_per_second == pytest.approx(MB, rel=0.05)
    true_exhaustion = s.start + (1324 - 300)
    assert fc.exhausts_at == pytest.approx(true_exhaustion, abs=20)
    opened_before = true_exhaustion - inc.opened_at
    assert opened_before > 800, f"opened only {opened_before:.0f}s before exhaustion"
    s.tick(350)                      # now within the 600 s lead
    inc = s.store.incident(inc.id)
    assert inc.top.recommended_action == "restart"
    assert true_exhaustion - s.t >= 500
    # the forecast rides on the evidence, and the incident plot draws it
    (ev,) = [e for e in s.store.evidence(inc.evidence_ids) if e.name == "memory_leak"]
    assert ev.attributes["forecast"]["limit_source"] == "cgroup"
    assert ev.attributes["forecast"]["exhausts_at"] == pytest.approx(true_exhaustion, abs=20)
    from incidentd.plots import render_incident

    png = render_incident(inc, s.store, s.metrics, 1.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_growth_that_levels_off_never_fires(make):
    """Caches warming up: fast growth, then flat. Neither the trend signal nor the leak rule may fire."""
    s = make(trend_window_seconds=120, exhaustion_lead_seconds=600)
    s.limit = 1324 * MB
    s.tick(60)
    s.start = s.t
    s.rss = lambda t: 300 * MB + 250 * MB * (1 - math.exp(-t / 40.0))
    seen = []
    for _ in range(200):
        s.tick(2)
        r = s.loop.last_readings["digits"].get("memory_leak")
        seen.append(r is not None and r.active)
    assert not any(seen)
    assert not [i for i in s.incidents() if i.top and i.top.root_cause == "hardware.memory_leak"]


def test_a_step_up_then_flat_is_not_a_leak(make):
    s = make(trend_window_seconds=120)
    s.tick(60)
    s.start = s.t
    s.rss = lambda t: 300 * MB + (150 * MB if t > 30 else 5 * MB * t)
    active = []
    for _ in range(150):
        s.tick(2)
        r = s.loop.last_readings["digits"].get("memory_leak")
        active.append(r is not None and r.active)
    assert not any(active)

