"""Discovery follows the sidecars a real Prometheus scrapes under a job selector; a dropped one is retired."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from incidentd.config import Settings
from incidentd.discovery import PrometheusTargets
from incidentd.runtime import Runtime
from tests.incidentd.exposition_servers import exposition_server
from tests.integration.conftest import PrometheusServer, wait_until


def job(name: str, urls: list[str], team: str = "ml") -> dict:
    return {"job_name": name, "static_configs": [{"targets": [u.removeprefix("http://") for u in urls],
                                                  "labels": {"team": team}}]}


def test_targets_of_a_job_are_followed_and_a_model_that_disappears_is_retired(
        prometheus: PrometheusServer, tmp_path: Path) -> None:
    with ExitStack() as stack:
        a = stack.enter_context(exposition_server('model_up{model="a",version="v1"} 1\n'))
        b = stack.enter_context(exposition_server('model_up{model="b",version="v1"} 1\n'))
        other = stack.enter_context(exposition_server('model_up{model="c",version="v1"} 1\n'))
        prometheus.configure([job("incidentd-sidecar", [a, b]), job("else", [other], team="web")])
        src = PrometheusTargets(prometheus.url, job="incidentd-sidecar", labels={"team": "ml"})
        assert wait_until(lambda: src.targets() == sorted([a, b]), 30), src.targets()

        rt = Runtime(Settings(database=tmp_path / "db.sqlite",
                              discovery={"prometheus_url": prometheus.url, "job": "incidentd-sidecar"}))
        try:
            assert rt.discovery is not None and rt.scraper is not None and rt.embedded is not None
            assert rt.discovery.refresh().added == sorted([a, b])
            rt.scraper.scrape_once(now=1000.0)
            assert rt.embedded.models() == ["a", "b"]

            prometheus.configure([job("incidentd-sidecar", [a]), job("else", [other], team="web")])
            assert wait_until(lambda: src.targets() == [a], 30), src.targets()
            change = rt.discovery.refresh()
            assert (change.removed, change.retired) == ([b], ["b"])
            assert rt.embedded.models() == ["a"]
        finally:
            rt.stop()
            src.close()
            prometheus.configure([])
