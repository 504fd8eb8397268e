"""Targets from a file_sd file: followed as it changes; a model whose sidecar goes is retired, incidents stay."""
from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest

from diagnosis import lifecycle
from incidentd.config import Settings
from incidentd.discovery import FileSDTargets
from incidentd.errors import ConfigError, SourceUnavailable
from incidentd.runtime import Runtime
from tests.incidentd.exposition_servers import exposition_server


def write_sd(path: Path, urls: list[str]) -> None:
    path.write_text(json.dumps([{"targets": [u.removeprefix("http://") for u in urls], "labels": {"team": "ml"}}]))


def test_file_sd_targets_follow_the_file_and_retire_a_model_that_went(tmp_path: Path) -> None:
    sd = tmp_path / "sidecars.json"
    with ExitStack() as stack:
        a = stack.enter_context(exposition_server('model_up{model="a",version="v1"} 1\n'))
        b = stack.enter_context(exposition_server('model_up{model="b",version="v1"} 1\n'))
        write_sd(sd, [a, b])
        rt = Runtime(Settings(database=tmp_path / "db.sqlite",
                              discovery={"file_sd": str(sd), "labels": {"team": "ml"}}))
        try:
            assert rt.discovery is not None and rt.scraper is not None and rt.embedded is not None
            assert rt.discovery.refresh().added == sorted([a, b])
            rt.scraper.scrape_once(now=1000.0)
            rt.loop.cycle(now=1001.0)
            assert rt.embedded.models() == ["a", "b"]
            assert "b" in rt.loop._models
            inc, entries = lifecycle.open_incident("b", [], [], 1001.0, [], alerts=["X"])
            rt.store.save_incident(inc, entries)

            write_sd(sd, [a])                                   # b's sidecar is gone
            change = rt.discovery.refresh()
            assert (change.removed, change.retired) == ([b], ["b"])
            assert rt.scraper.targets == [a]
            assert rt.embedded.models() == ["a"]
            assert "b" not in rt.loop._models
            assert rt.store.incident(inc.id).status is inc.status   # incidents stay as they are
        finally:
            rt.stop()


def test_a_broken_file_sd_keeps_the_current_targets(tmp_path: Path) -> None:
    sd = tmp_path / "sidecars.yaml"
    sd.write_text("- targets: [127.0.0.1:1]\n")
    assert FileSDTargets(sd).targets() == ["http://127.0.0.1:1"]
    sd.write_text("- labels: {a: b}\n")
    with pytest.raises(SourceUnavailable, match="group 0 has no 'targets' list"):
        FileSDTargets(sd).targets()
    rt = Runtime(Settings(database=tmp_path / "db.sqlite", scrape_targets=["http://127.0.0.1:2"],
                          discovery={"file_sd": str(sd)}))
    try:
        assert rt.discovery is not None
        assert rt.discovery.refresh().added == []
    finally:
        rt.stop()


def test_discovery_needs_a_source_and_the_embedded_store() -> None:
    with pytest.raises(ConfigError, match="discovery needs prometheus_url or file_sd"):
        Settings.load(None, discovery={"job": "x"})
    with pytest.raises(ConfigError, match="Prometheus discovers the sidecars itself"):
        Runtime(Settings(database=":memory:", prometheus_url="http://127.0.0.1:9",
                         discovery={"file_sd": "x.json"}))
