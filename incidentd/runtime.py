"""Builds the running service from Settings: store, metric source, scraper, rules, remediation, scheduler."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel

from diagnosis.catalog import CatalogSettings, default_catalog
from diagnosis.rules import DEFAULT_PACK, RuleEngine
from diagnosis.types import IncidentStatus
from incidentd.config import Settings
from incidentd.notify import Notifier
from incidentd.pipeline import DetectionLoop
from incidentd.store import Store
from incidentd.tsdb import EmbeddedStore, Scraper
from remediation.actions import ActionContext
from remediation.executors import LocalProcess, ModelServerAdmin
from remediation.executors_systemd import RestartExecutor, RollbackExecutor
from remediation.policy import Policy
from remediation.runner import ActionRunner
from remediation.types import ActionStatus

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ServiceMetrics:
    """The service's own metrics, on a registry passed in (never the global one)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.cycles = Counter("incidentd_detection_cycles_total", "Detection cycles run.", registry=r)
        self.cycle_seconds = Histogram("incidentd_detection_cycle_duration_seconds",
                                       "Wall time of one detection cycle.", registry=r,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.errors = Counter("incidentd_errors_total", "Errors caught at a boundary, by component.",
                              ["component"], registry=r)
        self.scrapes = Counter("incidentd_scrapes_total", "Scrapes of targets into the embedded store.",
                               registry=r)
        self.scrape_errors = Counter("incidentd_scrape_errors_total", "Failed scrapes.", registry=r)
        self.incidents_open = Gauge("incidentd_incidents_open", "Incidents not yet resolved.", registry=r)
        self.actions = Counter("incidentd_actions_total", "Remediation outcomes by action kind.",
                               ["kind", "outcome"], registry=r)
        self.unknown_models_refused = Counter(
            "incidentd_unknown_models_refused_total",
            "Model label values named only by alerts and refused an incident (detection.max_unknown_models).",
            registry=r)
        self.webhooks = Counter("incidentd_webhook_notifications_total",
                                "Webhook notifications by source and outcome.", ["source", "outcome"], registry=r)


def _from_settings(cls: type[T], section: BaseModel) -> T:
    """A dataclass built from the settings section's fields of the same names (the rest keep defaults), so a
    new setting reaches the policy or catalog by being declared in both, not by a copy line here."""
    return cls(**{f.name: getattr(section, f.name) for f in fields(cls)  # type: ignore[call-arg]
                  if f.name in type(section).model_fields})


class Runtime:
    """Everything the service runs. ``start()`` schedules the jobs; ``stop()`` stops them and the children."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.store = Store(settings.database)
        self.embedded: EmbeddedStore | None = None
        self.scraper: Scraper | None = None
        if settings.prometheus_url:
            from incidentd.sources.prometheus import PrometheusSource
            self.source = PrometheusSource(settings.prometheus_url)
        else:
            max_points = int(settings.retention_seconds / settings.scrape_interval_seconds) + 10
            self.embedded = EmbeddedStore(settings.retention_seconds, max_points=max_points)
            self.scraper = Scraper(self.embedded, settings.scrape_targets, models=settings.models)
            self.source = self.embedded
        packs = ([DEFAULT_PACK] if settings.use_default_rules else []) + list(settings.rules)
        self.engine = RuleEngine.load(packs)
        self.specs = default_catalog(_from_settings(CatalogSettings, settings.detection))
        self.admin = ModelServerAdmin(settings.model_server_url) if settings.model_server_url else None
        self.process: LocalProcess | None = None
        restarter, rollout = self._executors(settings)
        if settings.supervise_command:
            if not settings.model_server_url:
                from incidentd.errors import ConfigError
                raise ConfigError("supervise_command needs model_server_url (for its health check)")
            self.process = LocalProcess(settings.supervise_command, settings.model_server_url + "/healthz",
                                        settings.supervise_log)
        rs = settings.remediation
        policy = _from_settings(Policy, rs)
        ctx = ActionContext(self.admin, self.process or restarter,
                            {"bounds": rs.clamp_bounds, "margin": rs.clamp_margin}, rollout,
                            rs.executor.image_template) if self.admin else None
        self.remediator = ActionRunner(self.store, policy, ctx,
                                     on_outcome=lambda k, o: self.metrics.actions.labels(k, o).inc())
        self.loop = DetectionLoop(settings, self.source, self.store, self.engine, self.specs, self.remediator,
                                  self.admin, step=settings.scrape_interval_seconds)
        self.loop.on_refused = lambda _model: self.metrics.unknown_models_refused.inc()
        self.mirror = None
        if settings.elasticsearch_url:
            from collector.elasticsearch import ElasticsearchSink
            from incidentd.mirror import Mirror

            spool = Path(settings.database).resolve().parent / "es-spool"
            self.mirror = Mirror(self.store, ElasticsearchSink(settings.elasticsearch_url, spool_dir=spool,
                                                               registry=self.metrics.registry))
        self.notifier: Notifier | None = None
        if settings.notify.alertmanager_url or settings.notify.webhook_url:
            self.notifier = Notifier(settings.notify.alertmanager_url, settings.notify.external_url,
                                     settings.notify.webhook_url,
                                     ends_in=4 * max(settings.detect_interval_seconds, 15.0))
        self.scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": 30})
        self.started = False

    @staticmethod
    def _executors(settings: Settings) -> tuple[RestartExecutor | None, RollbackExecutor | None]:
        ex = settings.remediation.executor
        if ex.kind == "systemd":
            from remediation.executors_systemd import SystemdUnit

            return SystemdUnit(ex.unit or "", scope=ex.scope), None
        if ex.kind == "kubernetes":
            from remediation.executors_k8s import KubernetesDeployment

            dep = KubernetesDeployment(ex.namespace or "", ex.deployment or "", ex.container or "",
                                       rollout_timeout=ex.rollout_timeout_seconds,
                                       max_unavailable=ex.max_unavailable)
            return dep, dep if ex.image_template else None
        return None, None

    # ------------------------------------------------------------------ jobs (boundaries: log, count, go on)

    def scrape_job(self) -> None:
        if self.scraper is None:
            return
        try:
            before = sum(self.scraper.failures.values())
            self.scraper.scrape_once()
            self.metrics.scrapes.inc()
            failed = sum(self.scraper.failures.values()) - before
            if failed:
                self.metrics.scrape_errors.inc(failed)
        except Exception:
            self.metrics.errors.labels("scrape").inc()
            log.exception("scrape job failed")

    def detect_job(self) -> None:
        t0 = time.perf_counter()
        try:
            self.loop.cycle()
            self.metrics.cycles.inc()
            if self.mirror is not None:
                self.mirror.sync()
            self.notify_job()
            self.metrics.incidents_open.set(sum(1 for i in self.store.incidents(limit=1000)
                                                if i.status is not IncidentStatus.RESOLVED))
        except Exception:
            self.metrics.errors.labels("detect").inc()
            log.exception("detection job failed")
        finally:
            self.metrics.cycle_seconds.observe(time.perf_counter() - t0)

    def notify_job(self, now: float | None = None) -> None:
        """Tell people about incidents that need them (incidentd.notify); a failure is logged, never fatal."""
        if self.notifier is None:
            return
        try:
            awaiting = {a.incident_id for a in self.store.actions(statuses=(ActionStatus.AWAITING_APPROVAL,))}
            self.notifier.sync(self.store.incidents(limit=1000), awaiting, time.time() if now is None else now)
        except Exception:
            self.metrics.errors.labels("notify").inc()
            log.exception("notify job failed")

    def start(self) -> None:
        if self.started:
            return
        if self.process is not None:
            self.process.start()
        reconciled = self.remediator.reconcile()
        if reconciled:
            log.warning("reconciled %d actions interrupted by a restart", len(reconciled))
        s = self.settings
        if self.scraper is not None:
            self.scheduler.add_job(self.scrape_job, "interval", seconds=s.scrape_interval_seconds, id="scrape")
        self.scheduler.add_job(self.detect_job, "interval", seconds=s.detect_interval_seconds, id="detect")
        self.scheduler.start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.scheduler.shutdown(wait=True)
            self.started = False
            try:
                self.loop.save_baselines()
            except Exception:   # boundary: stopping must finish even if the store is unwritable
                log.exception("could not save learned baselines")
        self.remediator.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.mirror is not None:
            self.mirror.sink.close()
        if self.scraper is not None:
            self.scraper.close()
        if self.process is not None:
            self.process.stop()
        self.store.close()
