"""Builds the running service from Settings: store, metric source, scraper, rules, remediation, scheduler."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel

from diagnosis.catalog import CatalogSettings, default_catalog
from diagnosis.rules import DEFAULT_PACK, RuleEngine
from diagnosis.signals import SourceLike
from diagnosis.types import IncidentStatus
from incidentd.config import Settings
from incidentd.discovery import FileSDTargets, PrometheusTargets, TargetDiscovery, TargetSource
from incidentd.notify import Notifier
from incidentd.pipeline import DetectionLoop
from incidentd.replicas import Replicas, default_replica_id
from incidentd.server_control import THIRD_PARTY, server_control
from incidentd.store import Store
from incidentd.tsdb import EmbeddedStore, Scraper
from remediation.actions import ActionContext
from remediation.approval import ApprovalRules
from remediation.executors import LocalProcess, ModelServerAdmin
from remediation.executors_systemd import RestartExecutor, RollbackExecutor
from remediation.policy import Policy
from remediation.runner import ActionRunner
from remediation.types import ActionStatus

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


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
        self.store = Store(settings.database_url or settings.database, migrate_schema=settings.database_migrate,
                           registry=self.metrics.registry)
        self.embedded: EmbeddedStore | None = None
        self.scraper: Scraper | None = None
        self.source: SourceLike
        if settings.prometheus_url:
            from incidentd.sources.batch import BatchedSource
            from incidentd.sources.prometheus import PrometheusSource

            # One query per signal for all models (issue 16), not one per model and signal.
            self.source = BatchedSource(PrometheusSource(settings.prometheus_url),
                                        slack=2 * settings.detect_interval_seconds + 30)
        else:
            max_points = int(settings.retention_seconds / settings.scrape_interval_seconds) + 10
            self.embedded = EmbeddedStore(settings.retention_seconds, max_points=max_points)
            self.scraper = Scraper(self.embedded, settings.scrape_targets, models=settings.models)
            self.source = self.embedded
        self.discovery: TargetDiscovery | None = None
        if settings.discovery is not None:
            if self.scraper is None or self.embedded is None:
                from incidentd.errors import ConfigError
                raise ConfigError("discovery feeds the embedded store's scraper; with prometheus_url, "
                                  "Prometheus discovers the sidecars itself")
            ds = settings.discovery
            sources: list[TargetSource] = []
            if ds.prometheus_url:
                sources.append(PrometheusTargets(ds.prometheus_url, job=ds.job, labels=ds.labels))
            if ds.file_sd is not None:
                sources.append(FileSDTargets(ds.file_sd, labels=ds.labels))
            self.discovery = TargetDiscovery(settings.scrape_targets, sources, self.scraper, self.embedded,
                                             on_retire=self.retire)
        packs: list[Path | str] = [*([DEFAULT_PACK] if settings.use_default_rules else []), *settings.rules]
        self.engine = RuleEngine.load(packs)
        # per-model SLOs and memory limits from settings.models reach the catalog
        profiles = settings.model_profiles()
        self.specs = default_catalog(replace(_from_settings(CatalogSettings, settings.detection),
                                             latency_slo_seconds=profiles["latency_slo_seconds"],
                                             memory_limit_bytes=profiles["memory_limit_bytes"]))
        self.admin = (ModelServerAdmin(settings.model_server_url, token=settings.model_server_admin_token)
                      if settings.model_server_url else None)
        self.process: LocalProcess | None = None
        restarter, rollout = self._executors(settings)
        template = settings.remediation.executor.image_template
        if settings.remediation.executor.kind in THIRD_PARTY:
            # A third-party server: its executor restarts and rolls back one model through the server's
            # own control API; incidentd keeps the known-good version (incidentd.server_control).
            built = server_control(settings.remediation.executor, self.store,
                                   active=self.store.models_with_active_incidents)
            self.admin, restarter, rollout, template = built.admin, built.executor, built.executor, "{version}"
        if settings.supervise_command:
            if not settings.model_server_url:
                from incidentd.errors import ConfigError
                raise ConfigError("supervise_command needs model_server_url (for its health check)")
            # The pid file lets a service restarted after a SIGKILL adopt the child that outlived it.
            self.process = LocalProcess(settings.supervise_command, settings.model_server_url + "/healthz",
                                        settings.supervise_log, pid_file=settings.supervise_log.with_suffix(".pid"))
        rs = settings.remediation
        policy = _from_settings(Policy, rs)
        ctx = ActionContext(self.admin, self.process or restarter,
                            {"bounds": rs.clamp_bounds, "margin": rs.clamp_margin}, rollout,
                            template) if self.admin else None
        # Replicas share the models through leases when the state is in PostgreSQL.
        self.replicas: Replicas | None = None
        if not self.store.is_sqlite:
            self.replicas = Replicas(self.store, settings.replica_id or default_replica_id(),
                                     settings.lease_seconds or settings.detect_interval_seconds)
        self.remediator = ActionRunner(self.store, policy, ctx,
                                       on_outcome=lambda k, o: self.metrics.actions.labels(k, o).inc(),
                                       approval_rules=ApprovalRules(rs.approval_timeout_seconds,
                                                                    rs.two_person_approval),
                                       guard=self.replicas.may_execute if self.replicas else None)
        self.loop = DetectionLoop(settings, self.source, self.store, self.engine, self.specs, self.remediator,
                                  self.admin, step=settings.scrape_interval_seconds)
        self._queued: set[str] = set()
        if self.replicas is not None:
            self.loop.owned = self._owned
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

    def _owned(self, models: list[str], now: float) -> list[str]:
        """The models this replica owns this cycle; orphaned and pending actions of them are taken care of."""
        assert self.replicas is not None
        before = set(self.replicas.owned)
        owned = self.replicas.assign(models, now)
        for model in sorted(before - set(owned)):
            # the baselines are saved first: the new owner starts from what was learned here
            self.retire(model, "another replica owns it now", now)
        orphans, pending = self.replicas.in_flight_elsewhere()
        if orphans:
            fixed = self.remediator.reconcile(ids=orphans)
            log.warning("replica %s reconciled %d actions orphaned by a replica that died: %s", self.replicas.id,
                        len(fixed), ", ".join(fixed))
        for action_id in sorted(pending - self._queued):
            self.remediator.execute_later(action_id)
        self._queued = pending
        return owned

    def retire(self, model: str, why: str = "its targets are gone", now: float | None = None) -> None:
        """A model this process stops watching (sidecars gone, or another replica owns it now): its in-memory
        detection state goes (the loop's per-model eviction, baselines saved first); its incidents stay."""
        self.loop.forget(model, time.time() if now is None else now)
        log.info("model %s retired here: %s", model, why)

    def discover_job(self) -> None:
        if self.discovery is None:
            return
        try:
            self.discovery.refresh()
        except Exception:
            self.metrics.errors.labels("discovery").inc()
            log.exception("target discovery failed")

    def expire_job(self) -> None:
        if self.embedded is None:
            return
        try:
            self.embedded.expire()
        except Exception:
            self.metrics.errors.labels("expire").inc()
            log.exception("expiry of the embedded store failed")

    def renew_job(self) -> None:
        assert self.replicas is not None
        try:
            self.replicas.renew(time.time())
        except Exception:   # boundary: log and go on; the next renewal or cycle tries again
            log.exception("could not renew this replica's leases")

    def prune_job(self) -> None:
        try:
            report = self.store.prune(time.time(), self.settings.retention_days * 86400.0)
            if report.total:
                log.info("retention pruned %d rows (%s)", report.total, report)
        except Exception:
            self.metrics.errors.labels("prune").inc()
            log.exception("retention pruning failed")

    def detect_job(self) -> None:
        t0 = time.perf_counter()
        try:
            self.remediator.expire_pending(time.time())
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
        # With replicas, orphans are reconciled per model by whoever owns it (see _owned), not all at start.
        reconciled = self.remediator.reconcile() if self.replicas is None else []
        if reconciled:
            log.warning("reconciled %d actions interrupted by a restart", len(reconciled))
        s = self.settings
        if self.discovery is not None:
            self.discover_job()
            self.scheduler.add_job(self.discover_job, "interval", seconds=s.discovery.refresh_seconds,  # type: ignore[union-attr]
                                   id="discover")
        if self.scraper is not None:
            self.scheduler.add_job(self.scrape_job, "interval", seconds=s.scrape_interval_seconds, id="scrape")
            # Expiry walks every series, so it runs on its own timer, not after each scrape.
            self.scheduler.add_job(self.expire_job, "interval", seconds=max(60.0, s.scrape_interval_seconds),
                                   id="expire")
        self.scheduler.add_job(self.detect_job, "interval", seconds=s.detect_interval_seconds, id="detect")
        self.scheduler.add_job(self.prune_job, "interval", seconds=3600.0, id="prune")
        if self.replicas is not None:
            self.scheduler.add_job(self.renew_job, "interval", seconds=self.replicas.renew_every, id="renew")
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
        if self.replicas is not None:
            try:
                self.replicas.leave()
            except Exception:   # boundary: stopping must finish; the leases then simply expire
                log.exception("could not hand back this replica's leases")
        if self.notifier is not None:
            self.notifier.close()
        if self.mirror is not None:
            self.mirror.sink.close()
        if self.scraper is not None:
            self.scraper.close()
        if self.process is not None:
            self.process.stop()
        self.store.close()
