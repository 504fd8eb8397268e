"""One detection cycle: signals -> evidence -> hypotheses -> incident -> remediation -> verification.

Each stage reads only the previous stage's types; this module wires them and writes everything to the
store and the incident timeline.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from detectors.changes import RuntimeObservation, merge, runtime_changes
from diagnosis import lifecycle
from diagnosis.changes import change_evidence, observe_runtime
from diagnosis.forecast import ExhaustionSpec
from diagnosis.rules import ChangeFact, Facts, RuleEngine, SignalFact
from diagnosis.signals import SignalReading, SignalSpec, SourceLike, blind_while_monitoring_down
from diagnosis.types import (
    ChangeKind,
    Evidence,
    EvidenceKind,
    Hypothesis,
    Incident,
    IncidentStatus,
)
from diagnosis.vocabulary import SIGNALS
from incidentd.config import Settings
from incidentd.store import Store
from remediation.executors import ModelServerAdmin
from remediation.runner import ActionRunner
from remediation.types import ActionFailed
from remediation.verify import own_symptoms

log = logging.getLogger(__name__)

HOST_SIGNALS = frozenset({"host_cpu", "host_memory"})
BASELINE_SAVE_SECONDS = 60.0            # how often learned baselines are written to the store
BASELINE_MAX_AGE_SECONDS = 24 * 3600.0  # an older saved baseline is relearned rather than trusted


@dataclass(slots=True)
class _ModelState:
    episodes: Mapping[str, str] = field(default_factory=dict)     # signal -> evidence id of the open episode
    runtime: RuntimeObservation | None = None                     # what served the model at the last look
    runtime_instance: str | None = None                           # its process id at the latest look
    quiet_since: float | None = None
    tops: deque[str] = field(default_factory=lambda: deque(maxlen=10))
    causes: deque[frozenset[str]] = field(default_factory=lambda: deque(maxlen=10))   # simultaneous causes
    context_at: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)
    seen_at: float = 0.0                                          # when the model was last seen


@dataclass(frozen=True, slots=True)
class CycleReport:
    at: float
    models: list[str]
    active_signals: dict[str, list[str]]
    incidents: dict[str, str | None]


class DetectionLoop:
    """Runs detection cycles for every model seen in the source."""

    def __init__(self, settings: Settings, source: SourceLike, store: Store, engine: RuleEngine,
                 specs: list[SignalSpec], remediator: ActionRunner | None, admin: ModelServerAdmin | None = None,
                 step: float | None = None):
        self.settings = settings
        self.source = source
        self.store = store
        self.engine = engine
        self.specs = {s.name: s for s in specs}
        self.remediator = remediator
        self.admin = admin
        self.step = step or settings.scrape_interval_seconds
        self._models: dict[str, _ModelState] = {}
        self.last_readings: dict[str, dict[str, SignalReading]] = {}
        self.cycles = 0
        self._saved_at: dict[str, float] = {}
        # Replicas: narrows the models seen to those this process owns (a lease in the database).
        self.owned: Callable[[list[str], float], list[str]] | None = None
        self._refused: set[str] = set()           # unknown models refused (each counted once)
        self.refused_unknown = 0
        self.on_refused: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ discovery and context

    def models(self, now: float) -> list[str]:
        configured = set(self.settings.models)
        # A model whose sidecar stopped answering is still watched: the scrape's own `up` names it.
        discovered: set[str] = set()
        for metric in ("model_up", "up"):
            for s in self.source.read(metric, None, now - 5 * self.step - 30, now, self.step):
                m = s.label("model")
                if m:
                    discovered.add(m)
        with_incident = set(self.store.models_with_active_incidents())
        watched = configured | discovered | with_incident
        return sorted(watched | self._admit_unknown(watched, len(with_incident - configured - discovered)))

    def _admit_unknown(self, watched: set[str], admitted_before: int) -> set[str]:
        """Models named only by alerts: at most ``detection.max_unknown_models`` of them are watched
        (bounded cardinality; one incident each); the alerts of the rest stay stored as evidence only.
        ``admitted_before`` unknown models hold an active incident already. Each refused value counts once."""
        from_alerts = set(self.store.models_with_open_alerts()) - watched
        if not from_alerts:
            return set()
        cap = self.settings.detection.max_unknown_models
        room = max(0, cap - admitted_before)
        admitted = set(sorted(from_alerts)[:room])
        for model in sorted(from_alerts - admitted):
            if model not in self._refused and len(self._refused) < 100_000:
                self._refused.add(model)
                self.refused_unknown += 1
                if self.on_refused is not None:
                    self.on_refused(model)
                log.log(logging.WARNING if self.refused_unknown == 1 else logging.DEBUG,
                        "alert for unknown model %r stored as evidence only: %d unknown models are watched "
                        "already (detection.max_unknown_models; incidentd_unknown_models_refused_total counts "
                        "the others)", model, cap)
        return admitted

    def _context(self, model: str, st: _ModelState, now: float) -> dict[str, Any]:
        if now - st.context_at < max(1.0, self.step) and st.context:
            return st.context
        seen = observe_runtime(self.source, model, now - 5 * self.step - 30, now, self.step)
        ctx: dict[str, Any] = {"model": model, "running_version": seen.version}
        if self.admin is not None:
            try:
                v = self.admin.versions()
                ctx["running_version"] = v.get("current") or ctx["running_version"]
                ctx["running_version_known_good"] = v.get("current") == v.get("known_good")
            except ActionFailed as e:
                log.debug("admin API unavailable for context: %s", e)
        st.context, st.context_at = ctx, now
        st.runtime_instance = seen.instance
        return ctx

    def _note_changes(self, model: str, st: _ModelState, ctx: dict[str, Any], now: float) -> None:
        """Deploys and restarts nobody in incidentd made, from what serves the model now (detectors.changes)."""
        seen = RuntimeObservation(ctx.get("running_version"), st.runtime_instance)
        changes = runtime_changes(st.runtime, seen)
        st.runtime = merge(st.runtime, seen)
        if not changes:
            return
        recent = self.store.recent_evidence(model, now - 120, kind=EvidenceKind.CHANGE.value)
        for change in changes:
            ev = change_evidence(model, change, now, recent)
            if ev is not None:
                self.store.save_evidence(ev)
                log.info("%s observed: %s %s -> %s", ev.name, model, change.previous, change.current)

    # ------------------------------------------------------------------ the cycle

    def cycle(self, now: float | None = None) -> CycleReport:
        now = time.time() if now is None else now
        self.cycles += 1
        active: dict[str, list[str]] = {}
        incidents: dict[str, str | None] = {}
        models = self.models(now)
        if self.owned is not None:
            models = self.owned(models, now)
        for model in models:
            try:
                inc = self._cycle_model(model, now)
            except Exception:   # boundary: one model's failure must not stop the others
                log.exception("detection cycle failed for %s", model)
                continue
            active[model] = [n for n, r in self.last_readings.get(model, {}).items() if r.active]
            incidents[model] = inc.id if inc else None
        self.evict(now)
        return CycleReport(now, models, active, incidents)

    # ------------------------------------------------------------------ forgetting models gone for long

    def evict(self, now: float) -> list[str]:
        """Forget every model not seen for ``detection.evict_after_seconds``; its baselines are saved first.

        A model is seen while it has metrics, firing alerts, an active incident or is configured. An
        evicted model that comes back starts from its saved baselines, like after a service restart.
        """
        after = self.settings.detection.evict_after_seconds
        known = set(self._models) | set(self.last_readings) | set(self._saved_at)
        for spec in self.specs.values():
            known |= spec.models()
        gone = sorted(m for m in known if now - self._models.get(m, _ModelState()).seen_at >= after)
        for model in gone:
            self.forget(model, now)
            log.info("forgot %s: not seen for %.0fs (baselines saved)", model, after)
        return gone

    def forget(self, model: str, now: float) -> None:
        """Drop every piece of in-memory state about one model, saving its learned baselines first.

        Used by :meth:`evict` and by whoever stops watching a model for another reason (its targets are
        gone, or another replica owns it now): the next process to watch it starts from the saved baselines.
        Its incidents and actions stay in the store.
        """
        if model in self._models:
            try:
                self._write_baselines(model, now)
            except Exception:   # boundary: a failed save is logged; the model is forgotten anyway
                log.exception("could not save the baselines of %s before forgetting it", model)
        for spec in self.specs.values():
            spec.forget_model(model)
        self._models.pop(model, None)
        self.last_readings.pop(model, None)
        self._saved_at.pop(model, None)
        if self.remediator is not None:
            self.remediator.forget(model)

    # ------------------------------------------------------------------ baselines across restarts

    def _restore_baselines(self, model: str, now: float) -> None:
        saved = self.store.get(f"baselines:{model}")
        if not isinstance(saved, dict) or now - float(saved.get("at", 0.0)) > BASELINE_MAX_AGE_SECONDS:
            return
        restored = []
        for name, state in (saved.get("signals") or {}).items():
            spec = self.specs.get(name)
            if spec is None or not isinstance(state, dict):
                continue
            try:
                spec.restore_baseline(model, state, now)
                restored.append(name)
            except Exception as e:   # a damaged or outdated entry is relearned, never fatal
                log.warning("baseline of %s for %s not restored (%s): relearning it", name, model, e)
        if restored:
            log.info("restored learned baselines of %s for %s (saved %.0fs ago)", ", ".join(sorted(restored)),
                     model, now - float(saved["at"]))
        self._saved_at[model] = now

    def _save_baselines(self, model: str, now: float) -> None:
        if now - self._saved_at.get(model, 0.0) >= BASELINE_SAVE_SECONDS:
            self._write_baselines(model, now)

    def _write_baselines(self, model: str, now: float) -> None:
        signals = {n: b for n, s in self.specs.items() if (b := s.baseline(model)) is not None}
        if signals:
            self.store.put(f"baselines:{model}", {"at": now, "signals": signals})
        self._saved_at[model] = now

    def save_baselines(self, now: float | None = None) -> None:
        """Write every model's learned baselines now (the service calls it when it stops)."""
        now = time.time() if now is None else now
        for model in list(self._models):
            self._write_baselines(model, now)

    def _cycle_model(self, model: str, now: float) -> Incident | None:
        if model not in self._models:
            self._restore_baselines(model, now)
        st = self._models.setdefault(model, _ModelState())
        st.seen_at = now
        readings: dict[str, SignalReading] = {}
        for name, spec in self.specs.items():
            readings[name] = spec.observe(self.source, model, now, self.step)
        readings = blind_while_monitoring_down(readings)
        self.last_readings[model] = readings
        self._save_baselines(model, now)
        ctx = self._context(model, st, now)
        self._note_changes(model, st, ctx, now)
        facts, summaries = self._facts(model, st, readings, ctx, now)
        hyps = self.engine.evaluate(facts)
        top = hyps[0] if hyps else None
        inc = self.store.active_incident(lifecycle.dedup_key(model))
        # Quiet means nothing that any rule explains is going on; a busy host alone is no incident. Quiet is
        # seen on fresh data only: while a signal behind the open incident has no data, nothing is quiet.
        blind = lifecycle.unobserved(self._incident_signals(inc), readings) if inc is not None else []
        st.quiet_since = lifecycle.quiet_since(st.quiet_since, bool(hyps or facts.alerts or blind), now)
        evidence_ids = sorted({e for h in hyps for e in h.evidence_ids} | set(facts.alerts.values()))
        onsets = lifecycle.onsets({f.evidence_id: f.onset for f in facts.signals.values()},
                                  {c.evidence_id: c.at for c in facts.changes})
        if inc is not None and top is not None and lifecycle.superseded(
                inc, top, onsets, self.settings.remediation.min_confidence):
            inc, entry = lifecycle.resolve(inc, now, f"fix verified; a different fault ({top.root_cause}) "
                                                     f"follows in a new incident")
            self.store.save_incident(inc, [entry])
            inc = None
        if inc is not None and top is not None and lifecycle.returned(inc, top, onsets):
            inc, entry = lifecycle.reopen(inc, now, f"{top.root_cause} is back after its fix was verified: "
                                                    f"reopened, and acted on again under the policy")
            inc = self.store.save_incident(inc, [entry])
            log.warning("incident %s reopened: %s returned", inc.id, top.root_cause,
                        extra={"incident": inc.id, "model": model})
        if hyps or facts.alerts:
            if inc is None:
                inc, entries = lifecycle.open_incident(model, hyps, evidence_ids, now, summaries,
                                                       alerts=list(facts.alerts))
                inc = self.store.save_incident(inc, entries)
                log.warning("incident %s opened: %s", inc.id, inc.title, extra={"incident": inc.id, "model": model})
                st.tops.clear()
                st.causes.clear()
            elif not lifecycle.fading(inc, top, onsets,
                                      self.store.evidence(list(inc.top.evidence_ids)) if inc.top else []):
                upd = lifecycle.update_incident(inc, hyps, evidence_ids, now)
                if upd.changed:
                    inc = self.store.save_incident(upd.incident, upd.entries)
            if top is not None:
                st.tops.append(top.root_cause)
                st.causes.append(frozenset(h.root_cause for h in hyps if h.simultaneous))
        if inc is None or not inc.active:   # resolved by a person meanwhile: nothing more to do on it
            return None
        if self.remediator is not None:
            inc = self._remediate(inc, st, hyps, facts, now, ctx)
        in_flight = self.remediator.in_flight(model) if self.remediator else False
        if lifecycle.should_resolve(inc, st.quiet_since, now, self.settings.detection.resolve_after_seconds,
                                    in_flight):
            inc, entry = lifecycle.resolve(inc, now, f"all signals quiet for "
                                                     f"{now - (st.quiet_since or now):.0f}s")
            self.store.save_incident(inc, [entry])
            log.info("incident %s resolved", inc.id, extra={"incident": inc.id, "model": model})
            return None
        return inc

    def _incident_signals(self, inc: Incident) -> set[str]:
        """The signals whose anomalies the incident rests on: what must be seen healthy before it resolves."""
        return {e.name for e in self.store.evidence(list(inc.evidence_ids))
                if e.kind is EvidenceKind.ANOMALY and e.name in self.specs}

    def _facts(self, model: str, st: _ModelState, readings: dict[str, SignalReading], ctx: dict[str, Any],
               now: float) -> tuple[Facts, list[str]]:
        facts = Facts(model=model, context={k: v for k, v in ctx.items() if k != "model"})
        summaries: list[str] = []
        grace = self.settings.remediation.restart_grace_seconds
        changes = self.store.recent_evidence(model, now - 3600, kind=EvidenceKind.CHANGE.value)
        last_restart = max((c.at for c in changes if c.name == ChangeKind.RESTART.value), default=None)
        if last_restart is not None:
            for trended in self.specs.values():
                if isinstance(trended, ExhaustionSpec):
                    trended.restarted(model, last_restart + grace)
        firing = [n for n, r in readings.items()
                  if r.active and not lifecycle.restart_suppressed(n, last_restart, now, grace)]
        episodes = lifecycle.track_episodes(st.episodes, firing, {n for n, r in readings.items() if r.has_data})
        st.episodes = episodes.open
        for name in firing:
            r, episode = readings[name], episodes.open[name]
            attributes: dict[str, Any] = {"detector": r.detector, "value": r.value, "p_value": r.p_value,
                                          "description": SIGNALS.get(name, "")}
            # slow-fault signals carry their forecast of exhaustion (the incident plot draws it)
            spec = self.specs.get(name)
            if isinstance(spec, ExhaustionSpec) and (fc := spec.forecast(model)) is not None:
                attributes["forecast"] = fc.to_dict()
            ev = Evidence(episode, EvidenceKind.ANOMALY, model, name, r.onset or r.at, r.summary, r.score,
                          attributes=attributes)
            self.store.save_evidence(ev)
            facts.signals[name] = SignalFact(name, r.onset or r.at, r.score, r.value, r.summary, episode)
            summaries.append(f"{name}: {r.summary}")
        for e in self.store.evidence(list(episodes.ended)):
            self.store.save_evidence(replace(e, ended_at=now))
        for c in changes:
            facts.changes.append(ChangeFact(c.name, c.at, c.id))
        # An alert counts for as long as it fires, however long ago it started.
        for a in self.store.open_alerts(model):
            facts.alerts[a.name] = a.id
            sig = a.attributes.get("signal")
            if sig in SIGNALS and sig not in facts.signals:
                facts.signals[sig] = SignalFact(sig, a.at, a.score, float("nan"), a.summary, a.id)
        return facts, summaries

    def _remediate(self, inc: Incident, st: _ModelState, hyps: list[Hypothesis], facts: Facts, now: float,
                   ctx: dict[str, Any]) -> Incident:
        assert self.remediator is not None
        inc, entries = self.remediator.verify(inc, self.specs, self.source, now, ctx.get("running_version"),
                                              grace=self.step, active={n: f.onset for n, f in facts.signals.items()})
        if entries:
            inc = self.store.save_incident(inc, entries)
        if not hyps or inc.escalated or inc.status is IncidentStatus.RESOLVED:
            return inc
        # Every simultaneous cause of the incident gets its own action, in rank order, once its place among
        # the causes is stable; alternatives are never acted on. One action at a time (the policy).
        acted = {r.root_cause for r in self.remediator.records(incident_id=inc.id)}
        cause = lifecycle.next_cause_to_act(hyps, {h.root_cause for h in inc.causes}, acted, st.causes,
                                            self.settings.remediation.act_after_cycles)
        if cause is None:
            return inc
        # Verify on the signals that supported this cause and its action can change, apart from the
        # symptoms of the other causes; host-wide signals are context, never a fix's yardstick.
        by_id = {f.evidence_id: n for n, f in facts.signals.items()}
        causes = [h for h in hyps if h.simultaneous]
        own = own_symptoms(cause, causes, {by_id[e] for e in cause.evidence_ids if e in by_id}, HOST_SIGNALS)
        inc, _ = self.remediator.consider(inc, cause, list(own.verify), now, shared=own.shared)
        return inc
