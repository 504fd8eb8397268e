"""Incident lifecycle decisions: when to open, update, mitigate and resolve. Pure functions over types.

Incidents are immutable: every transition returns the new incident with the timeline entry it adds.
The rules that decide which transition applies (a fading diagnosis, a superseded incident, restart
suppression, anomaly episodes, a stable diagnosis to act on) live here too; the service only wires them.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from diagnosis.types import (
    Evidence,
    FaultDomain,
    Hypothesis,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
    TimelineKind,
    new_id,
)


def dedup_key(model: str) -> str:
    # One active incident per model: a fault's later symptoms (accuracy after drift, restarts after
    # starvation) belong to the incident already open, not to a new page.
    return f"model:{model}"


def severity_for(hyps: Sequence[Hypothesis]) -> Severity:
    top = hyps[0] if hyps else None
    if top is None:
        return Severity.WARNING
    if top.domain is FaultDomain.MODEL or top.root_cause in ("hardware.process_crash", "hardware.process_hang"):
        return Severity.CRITICAL
    return Severity.WARNING


def open_incident(model: str, hyps: Sequence[Hypothesis], evidence_ids: Sequence[str], now: float,
                  summaries: Sequence[str], alerts: Sequence[str] = ()) -> tuple[Incident, list[TimelineEntry]]:
    """Open an incident from ranked hypotheses, or from firing alerts that no rule explains yet."""
    top = hyps[0] if hyps else None
    title = (f"{model}: {top.root_cause} ({top.domain.value})" if top
             else f"{model}: alert {', '.join(sorted(alerts))} (no rule explains it)")
    inc = Incident(id=new_id("inc"), model=model, dedup_key=dedup_key(model), status=IncidentStatus.OPEN,
                   severity=severity_for(hyps), opened_at=now, updated_at=now, title=title,
                   hypotheses=tuple(hyps), evidence_ids=tuple(evidence_ids))
    what = (f"{top.root_cause} in {top.domain.value} (confidence {top.confidence:.2f})" if top
            else f"firing alerts {', '.join(sorted(alerts))}")
    timeline = [TimelineEntry(now, TimelineKind.OPENED, f"incident opened: {what}",
                              {"evidence": list(summaries)})]
    if hyps:
        timeline.append(TimelineEntry(now, TimelineKind.HYPOTHESES, _ranking(hyps),
                                      {"hypotheses": [h.to_dict() for h in hyps]}))
    return inc, timeline


def _ranking(hyps: Sequence[Hypothesis]) -> str:
    def one(i: int, h: Hypothesis) -> str:
        what = (f" (alternative to {', '.join(h.alternative_to)})" if h.alternative_to
                else f" explains {', '.join(h.explains)}" if h.explains else "")
        return f"{i + 1}. {h.root_cause} {h.confidence:.2f} -> {h.recommended_action.value}{what}"

    causes = [h for h in hyps if h.simultaneous]
    lead = f"{len(causes)} simultaneous causes; " if len(causes) > 1 else ""
    return "ranked hypotheses: " + lead + "; ".join(one(i, h) for i, h in enumerate(hyps[:5]))


@dataclass(frozen=True, slots=True)
class Update:
    incident: Incident
    changed: bool
    entries: list[TimelineEntry]


def update_incident(inc: Incident, hyps: Sequence[Hypothesis], evidence_ids: Sequence[str], now: float) -> Update:
    entries: list[TimelineEntry] = []
    # Once incidentd acted, the diagnosis it acted on stays on the incident: symptoms fading after the fix
    # (weights repaired, outputs still counted) match weaker rules and must not rewrite the story.
    frozen = bool(inc.action_ids) or inc.status is IncidentStatus.MITIGATED
    new_ev = [] if frozen else [e for e in evidence_ids if e not in inc.evidence_ids]
    out = inc
    if frozen:
        # ... but a second cause on evidence of its own, disjoint from everything the incident holds, is a
        # simultaneous fault: it joins the incident as a cause of its own.
        held = set(inc.evidence_ids) | {e for h in inc.hypotheses for e in h.evidence_ids}
        known = {h.root_cause for h in inc.hypotheses}
        joined = [h for h in hyps if h.simultaneous and h.root_cause not in known and h.evidence_ids
                  and not held & set(h.evidence_ids)]
        if joined:
            new_ev = sorted({e for h in joined for e in h.evidence_ids} - set(inc.evidence_ids))
            out = replace(out, hypotheses=(*inc.hypotheses, *joined), evidence_ids=(*inc.evidence_ids, *new_ev),
                          severity=max(inc.severity, severity_for(joined), key=lambda s: s is Severity.CRITICAL))
            entries.append(TimelineEntry(now, TimelineKind.HYPOTHESES,
                                         "another simultaneous cause: " + _ranking(joined).removeprefix(
                                             "ranked hypotheses: "),
                                         {"hypotheses": [h.to_dict() for h in out.hypotheses]}))
    if new_ev and not frozen:
        out = replace(out, evidence_ids=(*out.evidence_ids, *new_ev))
    old = [(h.root_cause, round(h.confidence, 2)) for h in inc.hypotheses]
    new = [(h.root_cause, round(h.confidence, 2)) for h in hyps]
    if hyps and old != new and not frozen:
        old_top = inc.top.root_cause if inc.top else None
        out = replace(out, hypotheses=tuple(hyps),
                      severity=max(inc.severity, severity_for(hyps), key=lambda s: s is Severity.CRITICAL))
        if old_top != hyps[0].root_cause:
            out = replace(out, title=f"{inc.model}: {hyps[0].root_cause} ({hyps[0].domain.value})")
        entries.append(TimelineEntry(now, TimelineKind.HYPOTHESES, _ranking(hyps),
                                     {"hypotheses": [h.to_dict() for h in hyps]}))
    if new_ev or entries:
        out = replace(out, updated_at=now)
    return Update(out, bool(new_ev or entries), entries)


def mitigate(inc: Incident, now: float, message: str) -> tuple[Incident, TimelineEntry]:
    out = replace(inc, updated_at=now)
    if inc.status in (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED):
        out = replace(out, status=IncidentStatus.MITIGATED, mitigated_at=now)
    return out, TimelineEntry(now, TimelineKind.MITIGATED, message)


def remaining_causes(inc: Incident, fixed: Collection[str]) -> tuple[Hypothesis, ...]:
    """The incident's simultaneous causes that no verified fix has dealt with yet."""
    return tuple(h for h in inc.causes if h.root_cause not in fixed)


def fix_one(inc: Incident, now: float, fixed: str, message: str,
            remaining: Sequence[Hypothesis]) -> tuple[Incident, TimelineEntry]:
    """One cause's fix verified while others remain: the incident says so and stays open on them."""
    left = "; ".join(f"{h.root_cause} ({h.domain.value}, "
                     + (f"next: {h.recommended_action.value} under the policy)" if h.recommended_action.changes_model
                        else "notify: no action on the model)") for h in remaining)
    return (replace(inc, updated_at=now),
            TimelineEntry(now, TimelineKind.CAUSE_FIXED, f"{message}; the incident stays open on {left}",
                          {"fixed": fixed, "remaining": [h.root_cause for h in remaining]}))


def fix_with_symptoms_left(inc: Incident, now: float, fixed: str, message: str,
                           symptoms: Sequence[str]) -> tuple[Incident, TimelineEntry]:
    """A cause's fix verified on what it can change while its symptoms stay below their baseline and no other
    known cause explains them yet: the incident says so and stays open (never mitigated on half a recovery)."""
    return (replace(inc, updated_at=now),
            TimelineEntry(now, TimelineKind.CAUSE_FIXED,
                          f"{message}: {fixed} is fixed; {', '.join(symptoms)} still below its baseline with no "
                          "other cause found yet: the incident stays open",
                          {"fixed": fixed, "remaining": [], "symptoms_left": list(symptoms)}))


def escalate(inc: Incident, now: float, message: str) -> tuple[Incident, TimelineEntry]:
    return (replace(inc, escalated=True, severity=Severity.CRITICAL, updated_at=now),
            TimelineEntry(now, TimelineKind.ESCALATED, message))


def resolve(inc: Incident, now: float, message: str, actor: str = "incidentd") -> tuple[Incident, TimelineEntry]:
    return (replace(inc, status=IncidentStatus.RESOLVED, resolved_at=now, updated_at=now),
            TimelineEntry(now, TimelineKind.RESOLVED, message, {"actor": actor}))


def acknowledge(inc: Incident, now: float, message: str, actor: str) -> tuple[Incident, TimelineEntry]:
    status = IncidentStatus.ACKNOWLEDGED if inc.status is IncidentStatus.OPEN else inc.status
    return (replace(inc, status=status, updated_at=now),
            TimelineEntry(now, TimelineKind.ACKNOWLEDGED, message, {"actor": actor}))


_STATUS_RANK = {IncidentStatus.OPEN: 0, IncidentStatus.ACKNOWLEDGED: 1, IncidentStatus.MITIGATED: 2,
                IncidentStatus.RESOLVED: 3}


def merge_concurrent(stored: Incident, incoming: Incident) -> Incident:
    """What to store when ``incoming`` is written over ``stored`` (field-level writes, issue 11).

    A resolved incident stays resolved (a returning fault opens a new one). A writer that worked from an
    older copy (``incoming.updated_at`` before ``stored.updated_at``: a detection cycle while a person
    acknowledged) keeps the stored diagnosis and the further of the two statuses, so an ack or resolve
    made during a cycle stays. Actions, evidence and escalation only ever accumulate.
    """
    if stored.status is IncidentStatus.RESOLVED:
        out = replace(stored, updated_at=max(stored.updated_at, incoming.updated_at))
    elif incoming.updated_at < stored.updated_at:
        status = max(stored.status, incoming.status, key=_STATUS_RANK.__getitem__)
        out = replace(stored, status=status,
                      mitigated_at=stored.mitigated_at if stored.mitigated_at is not None else incoming.mitigated_at,
                      resolved_at=incoming.resolved_at if status is IncidentStatus.RESOLVED else None)
    else:
        out = incoming
    return replace(out,
                   action_ids=tuple(dict.fromkeys((*out.action_ids, *stored.action_ids, *incoming.action_ids))),
                   evidence_ids=tuple(dict.fromkeys((*out.evidence_ids, *stored.evidence_ids,
                                                     *incoming.evidence_ids))),
                   escalated=stored.escalated or incoming.escalated)


def should_resolve(inc: Incident, quiet_since: float | None, now: float, resolve_after: float,
                   actions_in_flight: bool) -> bool:
    """Resolve once every signal has been quiet for ``resolve_after`` and no action is still being verified."""
    return (inc.active and quiet_since is not None and now - quiet_since >= resolve_after
            and not actions_in_flight)


class _Observed(Protocol):
    @property
    def has_data(self) -> bool: ...


def unobserved(signals: Collection[str], readings: Mapping[str, _Observed]) -> list[str]:
    """The incident's ``signals`` that have no fresh reading: missing data is never quiet, never recovery."""
    return sorted(n for n in signals if (r := readings.get(n)) is None or not r.has_data)


def quiet_since(previous: float | None, busy: bool, now: float) -> float | None:
    """When the model went quiet: nothing any rule explains and no firing alert. None while busy."""
    if busy:
        return None
    return now if previous is None else previous


# ---------------------------------------------------------------------- which transition applies

def fading(inc: Incident, top: Hypothesis | None, onsets: Mapping[str, float],
           support: Sequence[Evidence]) -> bool:
    """A weaker explanation left behind as the stronger one's evidence ends is not a new diagnosis.

    When a data fault stops, input drift clears before the accuracy window drains; the lingering
    accuracy drop alone matches concept drift. If everything behind the weaker hypothesis started while
    the current diagnosis still had its evidence, the incident keeps its diagnosis; a weaker hypothesis
    on evidence that started later is a new development and replaces it. ``support`` is the stored
    evidence of the current diagnosis; ``onsets`` maps evidence ids behind the facts to when they started.
    """
    current = inc.top
    if top is None or current is None or top.root_cause == current.root_cause \
            or top.confidence >= current.confidence:
        return False
    if not support:
        return False
    # A hypothesis on symptoms none of the incident's diagnoses explains or moves is no leftover of them: it
    # is a second fault (a memory balloon beside repaired weights) and joins as a cause of its own.
    explained = {s for h in inc.hypotheses for s in (*h.explains, *h.affects)}
    if top.explains and not explained & set(top.explains):
        return False
    # While any evidence of the current diagnosis was still there, or up to when the last of it ended.
    supported_until = max(e.ended_at if e.ended_at is not None else float("inf") for e in support)
    return all(onsets.get(e, float("inf")) <= supported_until for e in top.evidence_ids)


def returned(inc: Incident, top: Hypothesis, onsets: Mapping[str, float]) -> bool:
    """The fault of a mitigated incident is back: the same diagnosis on evidence that started after the fix
    was verified (lingering symptoms of the fixed fault started before it and do not count)."""
    if inc.status is not IncidentStatus.MITIGATED or inc.top is None or inc.mitigated_at is None:
        return False
    return top.root_cause == inc.top.root_cause and any(onsets.get(e, 0.0) > inc.mitigated_at
                                                        for e in top.evidence_ids)


def reopen(inc: Incident, now: float, message: str) -> tuple[Incident, TimelineEntry]:
    """A mitigated incident whose fault returned is open again (and acted on again under the policy)."""
    return (replace(inc, status=IncidentStatus.OPEN, updated_at=now),
            TimelineEntry(now, TimelineKind.REOPENED, message))


def superseded(inc: Incident, top: Hypothesis, onsets: Mapping[str, float], min_confidence: float) -> bool:
    """A mitigated incident whose fix held does not absorb a new, different fault."""
    if inc.status is not IncidentStatus.MITIGATED or inc.top is None or inc.mitigated_at is None:
        return False
    if top.root_cause == inc.top.root_cause or top.confidence < min_confidence:
        return False
    # Lingering symptoms of the fixed fault (accuracy windows still draining) are not a new fault:
    # the new hypothesis must rest on something that started after the fix was verified.
    return any(onsets.get(e, 0.0) > inc.mitigated_at for e in top.evidence_ids)


# Symptoms a restart itself causes: the target is down while it restarts, and the new process's CPU and
# memory are a fresh start's. Within the grace after a restart they are not evidence of a fault.
RESTART_SYMPTOMS = frozenset({"target_down", "process_cpu", "process_memory"})


def restart_suppressed(signal: str, last_restart: float | None, now: float, grace: float) -> bool:
    return signal in RESTART_SYMPTOMS and last_restart is not None and now - last_restart < grace


@dataclass(frozen=True, slots=True)
class Episodes:
    """Open anomaly episodes after one cycle: signal -> evidence id, and which episodes started or ended."""

    open: Mapping[str, str]
    started: tuple[str, ...]          # signals whose episode started this cycle
    ended: tuple[str, ...]            # evidence ids of episodes that ended this cycle


def track_episodes(open_episodes: Mapping[str, str], active: Iterable[str], seen: Collection[str],
                   make_id: Callable[[], str] = lambda: new_id("ev")) -> Episodes:
    """One anomaly episode per signal from when it turns active until it is observed inactive.

    ``active`` are the signals active (and not suppressed) this cycle; ``seen`` every signal with a
    reading. A signal with no reading this cycle keeps its episode open: missing data is not recovery.
    """
    now_open = dict(open_episodes)
    started: list[str] = []
    active = set(active)
    for name in sorted(active):
        if name not in now_open:
            now_open[name] = make_id()
            started.append(name)
    ended = [now_open.pop(n) for n in sorted(now_open) if n not in active and n in seen]
    return Episodes(now_open, tuple(started), tuple(ended))


def stable_top(recent_tops: Sequence[str], cycles: int) -> bool:
    """The same root cause led the ranking for the last ``cycles`` cycles: stable enough to act on."""
    return len(recent_tops) >= cycles and len(set(list(recent_tops)[-cycles:])) == 1


def stable_cause(recent_causes: Sequence[Collection[str]], cause: str, cycles: int) -> bool:
    """``cause`` was among the simultaneous causes for the last ``cycles`` cycles: stable enough to act on."""
    return len(recent_causes) >= cycles and all(cause in c for c in list(recent_causes)[-cycles:])


def next_cause_to_act(hyps: Sequence[Hypothesis], incident_causes: Collection[str], acted: Collection[str],
                      recent_causes: Sequence[Collection[str]], act_after_cycles: int) -> Hypothesis | None:
    """The cause an action goes to now, or None: every simultaneous cause of the incident gets its own
    action, in rank order, once its place among the causes is stable (``act_after_cycles``); alternatives,
    causes already acted on and causes whose action would not change the model are never chosen."""
    for cause in hyps:
        if (cause.simultaneous and cause.recommended_action.changes_model and cause.root_cause not in acted
                and cause.root_cause in incident_causes
                and stable_cause(recent_causes, cause.root_cause, act_after_cycles)):
            return cause
    return None


def onsets(signal_onsets: Mapping[str, float], change_onsets: Mapping[str, float]) -> dict[str, float]:
    """Evidence id -> when it started, for every active signal and change behind the facts."""
    return {**signal_onsets, **change_onsets}
