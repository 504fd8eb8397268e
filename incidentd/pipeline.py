"""One detection cycle: signals -> evidence -> hypotheses -> incident -> remediation -> verification.

Each stage reads only the previous stage's types; this module wires them and writes everything to the
store and the incident timeline.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diagnosis import lifecycle
from diagnosis.rules import ChangeFact, Facts, RuleEngine, SignalFact
from diagnosis.signals import SignalReading, SignalSpec, SourceLike
from diagnosis.types import (
    ChangeKind,
    Evidence,
    EvidenceKind,
    Incident,
    IncidentStatus,
    new_id,
)
from diagnosis.vocabulary import SIGNALS
from incidentd.config import Settings
from incidentd.remediator import Remediator
from incidentd.store import Store
from remediation.executors import ModelServerAdmin
from remediation.types import ActionFailed

log = logging.getLogger(__name__)

HOST_SIGNALS = frozenset({"host_cpu", "host_memory"})
BASELINE_SAVE_SECONDS = 60.0            # how often learned baselines are written to the store
BASELINE_MAX_AGE_SECONDS = 24 * 3600.0  # an older saved baseline is relearned rather than trusted


@dataclass(slots=True)
class _ModelState:
    episodes: dict[str, str] = field(default_factory=dict)        # signal -> evidence id of the open episode
    version: str | None = None
    quiet_since: float | None = None
    tops: deque = field(default_factory=lambda: deque(maxlen=10))
    context_at: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CycleReport:
    at: float
    models: list[str]
    active_signals: dict[str, list[str]]
    incidents: dict[str, str | None]


class DetectionLoop:
    """Runs detection cycles for every model seen in the source."""

    def __init__(self, settings: Settings, source: SourceLike, store: Store, engine: RuleEngine,
                 specs: list[SignalSpec], remediator: Remediator | None, admin: ModelServerAdmin | None = None,
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

    # ------------------------------------------------------------------ discovery and context

    def models(self, now: float) -> list[str]:
        seen = (set(self.settings.models) | set(self.store.models_with_open_alerts())
                | set(self.store.models_with_active_incidents()))
        for s in self.source.read("model_up", None, now - 5 * self.step - 30, now, self.step):
            m = s.label("model")
            if m:
                seen.add(m)
        return sorted(seen)

    def _version_from_source(self, model: str, now: float) -> str | None:
        latest: tuple[float, str] | None = None
        for s in self.source.read("model_up", {"model": model}, now - 5 * self.step - 30, now, self.step):
            v = s.label("version")
            if v and s.timestamps and s.values[-1] >= 1 and (latest is None or s.timestamps[-1] > latest[0]):
                latest = (s.timestamps[-1], v)
        return latest[1] if latest else None

    def _context(self, model: str, st: _ModelState, now: float) -> dict[str, Any]:
        if now - st.context_at < max(1.0, self.step) and st.context:
            return st.context
        ctx: dict[str, Any] = {"model": model, "running_version": self._version_from_source(model, now)}
        if self.admin is not None:
            try:
                v = self.admin.versions()
                ctx["running_version"] = v.get("current") or ctx["running_version"]
                ctx["running_version_known_good"] = v.get("current") == v.get("known_good")
            except ActionFailed as e:
                log.debug("admin API unavailable for context: %s", e)
        st.context, st.context_at = ctx, now
        return ctx

    def _note_version(self, model: str, st: _ModelState, version: str | None, now: float) -> None:
        if version is None or version == st.version:
            return
        previous, st.version = st.version, version
        if previous is None:
            return
        # Our own rollback is recorded by the remediator; anything else is a deploy.
        ours = [e for e in self.store.recent_evidence(model, now - 120, kind=EvidenceKind.CHANGE.value)
                if e.name == ChangeKind.ROLLBACK.value and e.attributes.get("to") == version]
        if ours:
            return
        ev = Evidence(new_id("chg"), EvidenceKind.CHANGE, model, ChangeKind.DEPLOY.value, now,
                      f"{model} switched from {previous} to {version}",
                      attributes={"from": previous, "to": version, "by": "observed"})
        self.store.save_evidence(ev)
        log.info("deploy observed: %s %s -> %s", model, previous, version)

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
        return CycleReport(now, models, active, incidents)

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
        readings: dict[str, SignalReading] = {}
        for name, spec in self.specs.items():
            r = spec.observe(self.source, model, now, self.step)
            if r is not None:
                readings[name] = r
        self.last_readings[model] = readings
        self._save_baselines(model, now)
        ctx = self._context(model, st, now)
        self._note_version(model, st, ctx.get("running_version"), now)
        facts, summaries = self._facts(model, st, readings, ctx, now)
        hyps = self.engine.evaluate(facts)
        inc = self.store.active_incident(lifecycle.dedup_key(model))
        # Quiet means nothing that any rule explains is going on; a busy host alone is no incident.
        if hyps or facts.alerts:
            st.quiet_since = None
        elif st.quiet_since is None:
            st.quiet_since = now
        evidence_ids = sorted({e for h in hyps for e in h.evidence_ids} | set(facts.alerts.values()))
        if inc is not None and hyps and self._superseded(inc, hyps[0], facts):
            entry = lifecycle.resolve(inc, now, f"fix verified; a different fault ({hyps[0].root_cause}) "
                                                f"follows in a new incident")
            self.store.save_incident(inc, [entry])
            inc = None
        if hyps or facts.alerts:
            if inc is None:
                inc, entries = lifecycle.open_incident(model, hyps, evidence_ids, now, summaries,
                                                       alerts=list(facts.alerts))
                self.store.save_incident(inc, entries)
                log.warning("incident %s opened: %s", inc.id, inc.title, extra={"incident": inc.id, "model": model})
                st.tops.clear()
            elif not self._fading(inc, hyps[0] if hyps else None, facts):
                upd = lifecycle.update_incident(inc, hyps, evidence_ids, now)
                if upd.changed:
                    self.store.save_incident(inc, upd.entries)
            if hyps:
                st.tops.append(hyps[0].root_cause)
        if inc is None:
            return None
        if self.remediator is not None:
            self._remediate(inc, st, hyps, facts, now, ctx)
        in_flight = self.remediator.in_flight(model) if self.remediator else False
        if lifecycle.should_resolve(inc, st.quiet_since, now, self.settings.detection.resolve_after_seconds,
                                    in_flight):
            entry = lifecycle.resolve(inc, now, f"all signals quiet for "
                                                f"{now - (st.quiet_since or now):.0f}s")
            self.store.save_incident(inc, [entry])
            log.info("incident %s resolved", inc.id, extra={"incident": inc.id, "model": model})
            return None
        return inc

    def _fading(self, inc: Incident, top: Any, facts: Facts) -> bool:
        """A weaker explanation left behind as the stronger one's evidence ends is not a new diagnosis.

        When a data fault stops, input drift clears before the accuracy window drains; the lingering
        accuracy drop alone matches concept drift. If everything behind the weaker hypothesis started while
        the current diagnosis still had its evidence, the incident keeps its diagnosis; a weaker hypothesis
        on evidence that started later is a new development and replaces it.
        """
        current = inc.top
        if top is None or current is None or top.root_cause == current.root_cause \
                or top.confidence >= current.confidence:
            return False
        support = self.store.evidence(list(current.evidence_ids))
        if not support:
            return False
        # While any evidence of the current diagnosis was still there, or up to when the last of it ended.
        supported_until = max(e.ended_at if e.ended_at is not None else float("inf") for e in support)
        onsets = _onsets(facts)
        return all(onsets.get(e, float("inf")) <= supported_until for e in top.evidence_ids)

    def _superseded(self, inc: Incident, top: Any, facts: Facts) -> bool:
        """A mitigated incident whose fix held does not absorb a new, different fault."""
        if inc.status is not IncidentStatus.MITIGATED or inc.top is None or inc.mitigated_at is None:
            return False
        if top.root_cause == inc.top.root_cause or top.confidence < self.settings.remediation.min_confidence:
            return False
        # Lingering symptoms of the fixed fault (accuracy windows still draining) are not a new fault:
        # the new hypothesis must rest on something that started after the fix was verified.
        onsets = _onsets(facts)
        return any(onsets.get(e, 0.0) > inc.mitigated_at for e in top.evidence_ids)

    def _facts(self, model: str, st: _ModelState, readings: dict[str, SignalReading], ctx: dict[str, Any],
               now: float) -> tuple[Facts, list[str]]:
        facts = Facts(model=model, context={k: v for k, v in ctx.items() if k != "model"})
        summaries: list[str] = []
        grace = self.settings.remediation.restart_grace_seconds
        changes = self.store.recent_evidence(model, now - 3600, kind=EvidenceKind.CHANGE.value)
        last_restart = max((c.at for c in changes if c.name == ChangeKind.RESTART.value), default=None)
        for name, r in readings.items():
            episode = st.episodes.get(name)
            suppressed = (name in ("target_down", "process_cpu", "process_memory") and last_restart is not None
                          and now - last_restart < grace)
            if r.active and not suppressed:
                if episode is None:
                    episode = new_id("ev")
                    st.episodes[name] = episode
                ev = Evidence(episode, EvidenceKind.ANOMALY, model, name, r.onset or r.at, r.summary, r.score,
                              attributes={"detector": r.detector, "value": r.value, "p_value": r.p_value,
                                          "description": SIGNALS.get(name, "")})
                self.store.save_evidence(ev)
                facts.signals[name] = SignalFact(name, r.onset or r.at, r.score, r.value, r.summary, episode)
                summaries.append(f"{name}: {r.summary}")
            elif episode is not None:
                closed = self.store.evidence([episode])
                if closed:
                    e = closed[0]
                    self.store.save_evidence(Evidence(e.id, e.kind, e.model, e.name, e.at, e.summary, e.score,
                                                      ended_at=now, attributes=e.attributes))
                del st.episodes[name]
        for c in changes:
            facts.changes.append(ChangeFact(c.name, c.at, c.id))
        # An alert counts for as long as it fires, however long ago it started.
        for a in self.store.open_alerts(model):
            facts.alerts[a.name] = a.id
            sig = a.attributes.get("signal")
            if sig in SIGNALS and sig not in facts.signals:
                facts.signals[sig] = SignalFact(sig, a.at, a.score, float("nan"), a.summary, a.id)
        return facts, summaries

    def _remediate(self, inc: Incident, st: _ModelState, hyps: list, facts: Facts, now: float,
                   ctx: dict[str, Any]) -> None:
        assert self.remediator is not None
        entries = self.remediator.verify(inc, self.specs, self.source, now, ctx.get("running_version"),
                                         grace=self.step, active={n: f.onset for n, f in facts.signals.items()})
        if entries:
            self.store.save_incident(inc, entries)
        if not hyps or inc.escalated or inc.status is IncidentStatus.RESOLVED:
            return
        top = hyps[0]
        need = self.settings.remediation.act_after_cycles
        stable = len(st.tops) >= need and len(set(list(st.tops)[-need:])) == 1
        if not stable:
            return
        # Verify on the signals that supported the hypothesis; those are what must recover.
        by_id = {f.evidence_id: n for n, f in facts.signals.items()}
        # Host-wide signals are context, not something this model's fix can be judged by.
        signals = sorted({by_id[e] for e in top.evidence_ids if e in by_id} - HOST_SIGNALS)
        before = len(inc.action_ids)
        rec = self.remediator.consider(inc, top, signals, now)
        if rec is not None and len(inc.action_ids) != before:
            self.store.save_incident(inc)


def _onsets(facts: Facts) -> dict[str, float]:
    """Evidence id -> when it started, for every active signal and change behind the facts."""
    onsets = {f.evidence_id: f.onset for f in facts.signals.values()}
    onsets.update({c.evidence_id: c.at for c in facts.changes})
    return onsets
