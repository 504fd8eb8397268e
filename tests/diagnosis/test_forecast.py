"""ExhaustionSpec on synthetic series: leaks, disks and GPUs forecast against the real limit (issue 18)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from diagnosis.forecast import ExhaustionSpec, forecast_exhaustion
from incidentd.tsdb import EmbeddedStore

MB = 2**20
GB = 2**30


def spec(**kw) -> ExhaustionSpec:
    args = {"window_seconds": 60, "lead_seconds": 300, "horizon_seconds": 6 * 3600}
    return ExhaustionSpec("memory_leak", "rss", "limit", **{**args, **kw})


def run(sp: ExhaustionSpec, store: EmbeddedStore, lines, t0: float, seconds: int):
    rng = np.random.default_rng(1)
    readings = []
    for i in range(seconds):
        t = t0 + i
        store.ingest_text("\n".join(lines(i, rng)) + "\n", at=t)
        if i % 2 == 0:
            readings.append((t, sp.observe(store, "m", t, 1.0)))
    return readings


def test_forecast_arithmetic():
    fc = forecast_exhaustion(1000.0, 1 * GB, 1 * MB, 2 * GB, "host", 600.0)
    assert fc.seconds_to_exhaustion == 1024 and fc.exhausts_at == 2024 and fc.act_by == 1424
    assert fc.seconds_until_due == 424
    assert forecast_exhaustion(0, 1.0, -1.0, 2.0, "host", 0).seconds_to_exhaustion == math.inf
    assert forecast_exhaustion(0, 3.0, 1.0, 2.0, "host", 0).seconds_to_exhaustion == 0.0


def test_without_a_limit_growth_is_reported_as_unforecastable_not_healthy():
    store = EmbeddedStore(3600, 5000)
    sp = spec()
    out = run(sp, store, lambda i, r: [f'rss{{model="m"}} {300 * MB + 2 * MB * i + r.normal(0, MB / 10)}'],
              1e6, 150)
    t, last = out[-1]
    assert not last.active and "no limit is known" in last.summary


def test_a_configured_limit_is_used_when_none_is_scraped():
    store = EmbeddedStore(3600, 5000)
    sp = spec(limits={"m": 1 * GB})
    out = run(sp, store, lambda i, r: [f'rss{{model="m"}} {300 * MB + 2 * MB * i + r.normal(0, MB / 10)}'],
              1e6, 150)
    last = out[-1][1]
    assert last.active and "configured limit 1 GiB" in last.summary
    fc = sp.forecast("m")
    # (1024 - 300 - 2*148) MB left at 2 MB/s
    assert fc.seconds_to_exhaustion == pytest.approx((1024 - 300 - 296) / 2, rel=0.05)


def test_growth_beyond_the_horizon_does_not_fire():
    store = EmbeddedStore(3600, 5000)
    sp = spec(horizon_seconds=3600)
    out = run(sp, store, lambda i, r: [f'rss{{model="m"}} {300 * MB + 0.1 * MB * i + r.normal(0, MB / 100)}',
                                       f'limit{{model="m",source="host"}} {16 * GB}'], 1e6, 150)
    assert not any(r.active for _, r in out if r)


def test_disk_free_space_shrinking_is_forecast_to_zero():
    store = EmbeddedStore(3600, 5000)
    sp = ExhaustionSpec("disk_fill", "free", "total", free=True, window_seconds=60, lead_seconds=60,
                        what="disk used")
    path = 'path="/srv"'
    out = run(sp, store, lambda i, r: [f'free{{model="m",{path}}} {10 * GB - 20 * MB * i}',
                                       f'total{{model="m",{path}}} {100 * GB}'], 1e6, 120)
    last = out[-1][1]
    assert last.active and "path=/srv" in last.summary
    assert sp.forecast("m").seconds_to_exhaustion == pytest.approx((10 * GB - 20 * MB * 118) / (20 * MB), rel=0.02)


def test_only_the_leaking_gpu_is_blamed():
    store = EmbeddedStore(3600, 5000)
    sp = ExhaustionSpec("gpu_memory_leak", "used", "total", window_seconds=60, what="GPU memory")
    out = run(sp, store, lambda i, r: [
        f'used{{model="m",gpu="0"}} {2 * GB + r.normal(0, MB)}',
        f'used{{model="m",gpu="1"}} {2 * GB + 30 * MB * i + r.normal(0, MB)}',
        f'total{{model="m",gpu="0"}} {16 * GB}', f'total{{model="m",gpu="1"}} {16 * GB}'], 1e6, 120)
    last = out[-1][1]
    assert last.active and "gpu=1" in last.summary and "gpu=0" not in last.summary


def test_a_restart_ends_the_episode_and_counts_as_recovery():
    store = EmbeddedStore(3600, 5000)
    sp = spec()
    restart_at = 130

    def lines(i, r):
        rss = 300 * MB + (4 * MB * i if i < restart_at else 0) + r.normal(0, MB / 10)
        return [f'rss{{model="m"}} {rss}', f'limit{{model="m",source="cgroup"}} {2 * GB}']

    out = run(sp, store, lines, 1e6, 170)
    by_t = dict(out)
    t_restart = 1e6 + restart_at
    assert any(r.active for t, r in out if t < t_restart)
    assert sp.recovered(store, "m", since=t_restart - 40, now=t_restart - 2) is False
    assert not out[-1][1].active
    assert sp.recovered(store, "m", since=t_restart, now=1e6 + 169) is True
    assert by_t[1e6 + 168].value >= 0


def test_a_restarted_process_warming_up_is_not_a_leak_but_a_leak_after_its_warm_up_is():
    # A restart that frees little (the old process was not bloated) and a new process whose memory grows
    # while it warms up: one trend across both, or over the warm-up, reads as a leak (seen in the fault bench).
    store = EmbeddedStore(3600, 5000)
    sp = spec(per_process=True)
    restart_at, warm = 100, 70

    def lines(i, r):
        if i < restart_at:
            rss = 900 * MB
        elif i < restart_at + warm:
            rss = 850 * MB + 2 * MB * (i - restart_at)            # warming up: caches and logs filling
        else:
            rss = 930 * MB + (3 * MB * (i - restart_at - warm) if i >= 220 else 0)   # a leak from i = 220
        return [f'rss{{model="m"}} {rss + r.normal(0, MB / 10)}', f'limit{{model="m",source="cgroup"}} {2 * GB}']

    t0 = 1e6
    before = run(sp, store, lines, t0, restart_at + 1)
    assert not any(r.active for _, r in before), "a flat process before the restart"
    sp.restarted("m", t0 + restart_at + warm)        # what the pipeline says when it sees the restart change
    rest = []
    for i in range(restart_at + 1, 300):
        store.ingest_text("\n".join(lines(i, np.random.default_rng(i))) + "\n", at=t0 + i)
        if i % 2 == 0:
            rest.append((i, sp.observe(store, "m", t0 + i, 1.0)))
    assert not any(r.active for i, r in rest if i < 220), "the warm-up is not a leak"
    warming = [r for i, r in rest if restart_at < i < restart_at + warm]
    assert warming and all(r.has_data and "warms up" in r.summary for r in warming)
    assert any(r.active for i, r in rest if i >= 220), "a leak after the warm-up is still found"


def test_without_per_process_a_restart_leaves_the_trend_alone():
    sp = spec()          # a disk's usage does not start over when the server restarts
    store = EmbeddedStore(3600, 5000)
    run(sp, store, lambda i, r: [f'rss{{model="m"}} {300 * MB + 4 * MB * i}',
                                 f'limit{{model="m",source="cgroup"}} {2 * GB}'], 1e6, 90)
    sp.restarted("m", 1e6 + 200)
    assert sp.observe(store, "m", 1e6 + 90, 1.0).active


def test_a_forgotten_model_starts_over_and_others_keep_their_episode():
    store = EmbeddedStore(3600, 5000)
    sp = spec(limits={"m": 1 * GB, "n": 1 * GB})

    def grow(i, r):
        return [f'rss{{model="{m}"}} {300 * MB + 2 * MB * i + r.normal(0, MB / 10)}' for m in ("m", "n")]

    rng = np.random.default_rng(2)
    for i in range(150):
        t = 1e6 + i
        store.ingest_text("\n".join(grow(i, rng)) + "\n", at=t)
        if i % 2 == 0:
            sp.observe(store, "m", t, 1.0)
            sp.observe(store, "n", t, 1.0)
    assert sp.models() == {"m", "n"} and sp.forecast("m") is not None
    sp.forget_model("m")
    assert sp.models() == {"n"} and sp.forecast("m") is None and sp.forecast("n") is not None
    # back after eviction: the window is read again from the store, as a new episode
    again = sp.observe(store, "m", 1e6 + 150, 1.0)
    assert again is not None and again.active and again.onset == 1e6 + 150
    assert sp.observe(store, "n", 1e6 + 150, 1.0).onset < 1e6 + 150


def test_a_burst_of_memory_on_slow_drift_is_not_sustained_growth_but_a_steady_leak_is() -> None:
    """The memory-pressure fault allocates hundreds of MB within seconds while RSS drifts up slowly: every
    quarter of the window grows, but one holds a jump, so it is a step for the pressure signal, not a leak."""
    from detectors.univariate.trend import trend
    from diagnosis.forecast import sustained_growth

    mb = 2.0**20
    rng = np.random.default_rng(7)
    for end in (44.0, 48.0, 52.0, 60.0, 70.0):
        t = np.arange(end - 32.0, end, 1.0)
        drift = 300 * mb + 1.0 * mb * t + rng.normal(0, 0.2 * mb, t.size)
        burst = drift + np.clip(t - 40.0, 0.0, 6.0) * 128 * mb
        assert sustained_growth(trend(t, drift), z_alarm=3.0, min_persistence=0.5)
        assert not sustained_growth(trend(t, burst), z_alarm=3.0, min_persistence=0.5), end
