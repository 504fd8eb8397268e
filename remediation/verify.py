"""Verification of an executed action: did the symptoms it was meant to fix recover, or did it make things worse?

Pure: the caller supplies whether a signal recovered on data since a time (``Recovered``), the onsets of the
model's active signals and the clock; the answer is a :class:`Verdict`.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from diagnosis.types import ActionKind, Hypothesis
from remediation.types import ActionRecord

# Symptoms an action on the model can cause. One of these starting after an action (and not part of the
# diagnosis it acted on) means the action made things worse. Drift, labels, host and GPU signals are not
# caused by a clamp, rollback or restart, so they never count against one.
HARM_SIGNALS = frozenset({"accuracy", "error_rate", "nonfinite_outputs", "weights_nonfinite",
                          "weights_exploding", "prediction_drift", "latency", "target_down", "request_stall"})

# What each action can change. A model action cannot bring back drifted inputs, stalled labels, a busy
# host or a hot GPU; verifying it on those would judge it on another cause's symptoms.
CHANGEABLE: Mapping[ActionKind, frozenset[str]] = {
    ActionKind.CLAMP: frozenset({"nonfinite_outputs", "weights_nonfinite", "weights_exploding", "accuracy",
                                 "error_rate", "prediction_drift"}),
    ActionKind.ROLLBACK: frozenset({"accuracy", "error_rate", "nonfinite_outputs", "weights_nonfinite",
                                    "weights_exploding", "prediction_drift", "latency"}),
    ActionKind.RESTART: frozenset({"latency", "process_cpu", "process_memory", "target_down", "request_stall",
                                   "error_rate"}),
}
# Rates a rollback can judge by version (the restored version against the one it replaced, on the same
# inputs) when another cause also holds them down.
BY_VERSION = frozenset({"accuracy", "error_rate"})


@dataclass(frozen=True, slots=True)
class Symptoms:
    """What an action on one cause is verified on, and which of those another cause also moves."""

    verify: tuple[str, ...]
    shared: tuple[str, ...] = ()


def own_symptoms(cause: Hypothesis, others: Sequence[Hypothesis], supported: Set[str],
                 context_only: Set[str] = frozenset()) -> Symptoms:
    """The symptoms ``cause`` explains that its action can change, judged apart from ``others``' symptoms.

    A symptom is another cause's when that cause explains it or moves it (``affects``: a data shift holds
    accuracy down even while the accuracy test is not significant).
    ``supported`` are the signals behind the cause's evidence (what must recover; ``context_only`` ones,
    host-wide signals, are never a fix's yardstick); ``others`` the
    incident's other simultaneous causes. A symptom another cause also explains is left out (its
    recovery would say nothing about this action), except a rate a rollback can judge by version. When
    nothing of its own is left, the action is judged on all its changeable symptoms, as with one cause.
    """
    kind = cause.recommended_action
    evidence = set(supported) - set(context_only)
    mine = evidence & CHANGEABLE.get(kind, frozenset()) or evidence
    theirs = set().union(*(set(o.explains) | set(o.affects) for o in others if o.root_cause != cause.root_cause))
    shared = mine & theirs
    by_version = shared & BY_VERSION if kind is ActionKind.ROLLBACK else set()
    own = (mine - shared) | by_version
    if not own:
        return Symptoms(tuple(sorted(mine)))
    return Symptoms(tuple(sorted(own)), tuple(sorted(by_version)))


def regroup(rec: ActionRecord, others: Set[str]) -> ActionRecord:
    """``rec`` with its symptoms regrouped against causes known now (a second cause may have appeared after
    the action started): symptoms ``others`` explain leave the verification, except the rates a rollback
    judges by version. Nothing of its own left: unchanged."""
    mine = set(rec.verify_signals)
    shared = mine & set(others)
    by_version = shared & BY_VERSION if rec.kind is ActionKind.ROLLBACK else set()
    own = (mine - shared) | by_version
    if not shared or not own:
        return rec
    return replace(rec, verify_signals=tuple(sorted(own)),
                   shared_signals=tuple(sorted(set(rec.shared_signals) | by_version)))


# Whether signal ``name`` is healthy on data from ``since`` to now: True, False, or None when there is not
# enough data to say (missing data is never read as healthy).
Recovered = Callable[[str, float], "bool | None"]


class Outcome(enum.StrEnum):
    PENDING = "pending"               # not decided yet: keep verifying
    VERIFIED = "verified"             # every signal it was meant to fix recovered
    NOT_RECOVERED = "not_recovered"   # the verification window ended without recovery
    WORSE = "worse"                   # a new harm signal started after the action


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    signals: Mapping[str, bool | None] = field(default_factory=dict)   # the verified signals' answers
    worse: tuple[str, ...] = ()                                         # new harm signals (WORSE only)

    @property
    def no_data(self) -> bool:
        """No signal it is verified on had fresh data to answer with (missing data is never recovery)."""
        return bool(self.signals) and all(ok is None for ok in self.signals.values())


def judge(rec: ActionRecord, recovered: Recovered, known: frozenset[str] | set[str],
          active: Mapping[str, float], now: float, grace: float, verify_seconds: float,
          revert_on_worse: bool, attributed: Set[str] = frozenset()) -> Verdict:
    """The verdict on one action in verification.

    ``active`` maps the model's active signals to their onsets: a harm signal that started after the
    action (past ``grace``), was not among the symptoms it was meant to fix, and is unhealthy on data
    from a quarter of the verification window after the action on (labels arrive late: an accuracy drop
    noticed just after an action may be the fault's own, on predictions made before it) makes it WORSE.
    ``known`` are the signals ``recovered`` can answer for. ``attributed`` are symptoms another
    simultaneous cause of the incident explains: they never count against this action.
    """
    if rec.executed_at is None:
        return Verdict(Outcome.PENDING)
    since = rec.executed_at + grace
    settled = rec.executed_at + max(grace, verify_seconds / 4)
    if revert_on_worse and now > settled:
        worse = tuple(sorted(n for n, onset in active.items()
                             if n in HARM_SIGNALS and n not in rec.verify_signals and n not in attributed
                             and onset > since
                             and n in known and recovered(n, settled) is False))
        if worse:
            return Verdict(Outcome.WORSE, worse=worse)
    verdicts = {name: recovered(name, since) for name in rec.verify_signals if name in known}
    if verdicts and all(v is True for v in verdicts.values()):
        return Verdict(Outcome.VERIFIED, verdicts)
    if rec.verify_deadline is not None and now > rec.verify_deadline:
        return Verdict(Outcome.NOT_RECOVERED, verdicts)
    return Verdict(Outcome.PENDING, verdicts)
