"""Incident lifecycle decisions: when to open, update, mitigate and resolve. Pure functions over types."""
from __future__ import annotations

from dataclasses import dataclass

from diagnosis.types import (
    FaultDomain,
    Hypothesis,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
    new_id,
)


def dedup_key(model: str) -> str:
    # One active incident per model: a fault's later symptoms (accuracy after drift, restarts after
    # starvation) belong to the incident already open, not to a new page.
    return f"model:{model}"


def severity_for(hyps: list[Hypothesis]) -> Severity:
    top = hyps[0] if hyps else None
    if top is None:
        return Severity.WARNING
    if top.domain is FaultDomain.MODEL or top.root_cause in ("hardware.process_crash", "hardware.process_hang"):
        return Severity.CRITICAL
    return Severity.WARNING


def open_incident(model: str, hyps: list[Hypothesis], evidence_ids: list[str], now: float,
                  summaries: list[str], alerts: list[str] = ()) -> tuple[Incident, list[TimelineEntry]]:
    """Open an incident from ranked hypotheses, or from firing alerts that no rule explains yet."""
    top = hyps[0] if hyps else None
    title = (f"{model}: {top.root_cause} ({top.domain.value})" if top
             else f"{model}: alert {', '.join(sorted(alerts))} (no rule explains it)")
    inc = Incident(id=new_id("inc"), model=model, dedup_key=dedup_key(model), status=IncidentStatus.OPEN,
                   severity=severity_for(hyps), opened_at=now, updated_at=now, title=title,
                   hypotheses=list(hyps), evidence_ids=list(evidence_ids))
    what = (f"{top.root_cause} in {top.domain.value} (confidence {top.confidence:.2f})" if top
            else f"firing alerts {', '.join(sorted(alerts))}")
    timeline = [TimelineEntry(now, "opened", f"incident opened: {what}", {"evidence": summaries})]
    if hyps:
        timeline.append(TimelineEntry(now, "hypotheses", _ranking(hyps),
                                      {"hypotheses": [h.to_dict() for h in hyps]}))
    return inc, timeline


def _ranking(hyps: list[Hypothesis]) -> str:
    return "ranked hypotheses: " + "; ".join(f"{i + 1}. {h.root_cause} {h.confidence:.2f} -> {h.recommended_action}"
                                             for i, h in enumerate(hyps[:5]))


@dataclass(frozen=True, slots=True)
class Update:
    changed: bool
    entries: list[TimelineEntry]


def update_incident(inc: Incident, hyps: list[Hypothesis], evidence_ids: list[str], now: float) -> Update:
    entries: list[TimelineEntry] = []
    # Once incidentd acted, the diagnosis it acted on stays on the incident: symptoms fading after the fix
    # (weights repaired, outputs still counted) match weaker rules and must not rewrite the story.
    frozen = bool(inc.action_ids) or inc.status is IncidentStatus.MITIGATED
    new_ev = [] if frozen else [e for e in evidence_ids if e not in inc.evidence_ids]
    if new_ev:
        inc.evidence_ids.extend(new_ev)
    old = [(h.root_cause, round(h.confidence, 2)) for h in inc.hypotheses]
    new = [(h.root_cause, round(h.confidence, 2)) for h in hyps]
    if hyps and old != new and not frozen:
        old_top = inc.top.root_cause if inc.top else None
        inc.hypotheses = list(hyps)
        inc.severity = max(inc.severity, severity_for(hyps), key=lambda s: s is Severity.CRITICAL)
        if old_top != hyps[0].root_cause:
            inc.title = f"{inc.model}: {hyps[0].root_cause} ({hyps[0].domain.value})"
        entries.append(TimelineEntry(now, "hypotheses", _ranking(hyps),
                                      {"hypotheses": [h.to_dict() for h in hyps]}))
    if new_ev or entries:
        inc.updated_at = now
    return Update(bool(new_ev or entries), entries)


def mitigate(inc: Incident, now: float, message: str) -> TimelineEntry:
    if inc.status in (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED):
        inc.status = IncidentStatus.MITIGATED
        inc.mitigated_at = now
    inc.updated_at = now
    return TimelineEntry(now, "mitigated", message)


def escalate(inc: Incident, now: float, message: str) -> TimelineEntry:
    inc.escalated = True
    inc.severity = Severity.CRITICAL
    inc.updated_at = now
    return TimelineEntry(now, "escalated", message)


def resolve(inc: Incident, now: float, message: str, actor: str = "incidentd") -> TimelineEntry:
    inc.status = IncidentStatus.RESOLVED
    inc.resolved_at = now
    inc.updated_at = now
    return TimelineEntry(now, "resolved", message, {"actor": actor})


def should_resolve(inc: Incident, quiet_since: float | None, now: float, resolve_after: float,
                   actions_in_flight: bool) -> bool:
    """Resolve once every signal has been quiet for ``resolve_after`` and no action is still being verified."""
    return (inc.active and quiet_since is not None and now - quiet_since >= resolve_after
            and not actions_in_flight)
