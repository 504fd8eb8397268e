"""Scrape targets beyond the static list: the sidecars Prometheus scrapes, or a Prometheus ``file_sd`` file.

``PrometheusTargets`` reads ``/api/v1/targets?state=active`` (Prometheus, or any server with its API) and
keeps the targets whose ``job`` and labels match the selector; a target's ``scrapeUrl`` minus its path is
the sidecar's base URL. ``FileSDTargets`` reads a file in Prometheus' ``file_sd`` format (JSON or YAML:
a list of ``{targets: [host:port], labels: {...}}``; ``__scheme__`` picks http or https).

``TargetDiscovery.refresh`` sets the scraper's targets to static + discovered. A model whose every
target disappeared is retired: its series and in-memory detection state are evicted (``on_retire``);
its incidents stay as they are.

    >>> d = TargetDiscovery(["http://10.0.0.5:9000"], [PrometheusTargets("http://prom:9090", job="sidecars")],
    ...                     scraper, store, on_retire=runtime.retire)       # doctest: +SKIP
    >>> d.refresh()                                                          # doctest: +SKIP
    TargetChange(added=['http://10.0.0.7:9000'], removed=[], retired=[])
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import yaml

from incidentd.errors import ConfigError, SourceUnavailable
from incidentd.tsdb import EmbeddedStore, Scraper

log = logging.getLogger(__name__)


class TargetSource(Protocol):
    def targets(self) -> list[str]:
        """Base URLs of the sidecars to scrape. Raises ``SourceUnavailable`` when it cannot tell."""
        ...


class PrometheusTargets:
    """Active targets of a Prometheus, selected by job and exact label values."""

    def __init__(self, url: str, job: str | None = None, labels: dict[str, str] | None = None,
                 timeout: float = 10.0, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.job = job
        self.labels = dict(labels or {})
        self._client = client or httpx.Client(timeout=timeout)

    def targets(self) -> list[str]:
        try:
            resp = self._client.get(f"{self.url}/api/v1/targets", params={"state": "active"})
            body: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as e:
            raise SourceUnavailable(f"Prometheus targets at {self.url} unreadable: {e}") from e
        if resp.status_code != 200 or body.get("status") != "success":
            raise SourceUnavailable(f"Prometheus targets at {self.url} failed ({resp.status_code}): "
                                    f"{body.get('error', '')}")
        out = set()
        for t in body.get("data", {}).get("activeTargets", []):
            labels = t.get("labels", {})
            if self.job is not None and labels.get("job") != self.job:
                continue
            if any(labels.get(k) != v for k, v in self.labels.items()):
                continue
            parts = urlsplit(t.get("scrapeUrl", ""))
            if parts.scheme in ("http", "https") and parts.netloc:
                out.add(f"{parts.scheme}://{parts.netloc}")
        return sorted(out)

    def close(self) -> None:
        self._client.close()


class FileSDTargets:
    """Targets from a Prometheus ``file_sd`` file (JSON or YAML), re-read on every refresh."""

    def __init__(self, path: Path | str, labels: dict[str, str] | None = None):
        self.path = Path(path)
        self.labels = dict(labels or {})

    def targets(self) -> list[str]:
        try:
            text = self.path.read_text()
        except OSError as e:
            raise SourceUnavailable(f"file_sd file {self.path} unreadable: {e}") from e
        try:
            groups = json.loads(text) if self.path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise SourceUnavailable(f"file_sd file {self.path} is not valid JSON/YAML: {e}") from e
        if not isinstance(groups, list):
            raise SourceUnavailable(f"file_sd file {self.path}: expected a list of target groups")
        out = set()
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("targets"), list):
                raise SourceUnavailable(f"file_sd file {self.path}: group {i} has no 'targets' list")
            labels = g.get("labels") or {}
            if any(labels.get(k) != v for k, v in self.labels.items()):
                continue
            scheme = labels.get("__scheme__", "http")
            for hostport in g["targets"]:
                out.add(f"{scheme}://{hostport}")
        return sorted(out)


@dataclass(frozen=True, slots=True)
class TargetChange:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)


class TargetDiscovery:
    """Keeps the scraper's targets in step with the static list and the discovery sources."""

    def __init__(self, static: list[str], sources: list[TargetSource], scraper: Scraper, store: EmbeddedStore,
                 on_retire: Callable[[str], None] | None = None):
        if not sources:
            raise ConfigError("target discovery needs a source (a Prometheus selector or a file_sd file)")
        self.static = list(static)
        self.sources = sources
        self.scraper = scraper
        self.store = store
        self.on_retire = on_retire or (lambda model: None)

    def refresh(self) -> TargetChange:
        """One round: read every source; on a source that cannot be read, keep its last targets."""
        wanted = set(self.static)
        for src in self.sources:
            try:
                wanted |= set(src.targets())
            except SourceUnavailable as e:
                log.warning("target discovery: %s; keeping the current targets", e)
                return TargetChange()
        current = set(self.scraper.targets)
        added, removed = sorted(wanted - current), sorted(current - wanted)
        if not added and not removed:
            return TargetChange()
        kept_models: set[str] = set()
        for t in wanted & current:
            kept_models |= self.store.models_of(t)
        gone_models: set[str] = set()
        for t in removed:
            gone_models |= self.store.models_of(t)
            self.store.forget_origin(t)
        self.scraper.targets = sorted(wanted)
        retired = sorted(gone_models - kept_models)
        for model in retired:
            self.store.forget_model(model)
            self.on_retire(model)
        if added or removed:
            log.info("targets: +%d -%d; retired models: %s", len(added), len(removed), ", ".join(retired) or "none")
        return TargetChange(added, removed, retired)
