"""Verification of an executed action: did the symptoms it was meant to fix recover, or did it make things worse?

Pure: the caller supplies whether a signal recovered on data since a time (``Recovered``), the onsets of the
model's active signals and the clock; the answer is a :class:`Verdict`.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from remediation.types import ActionRecord

# Symptoms an action on the model can cause. One of these starting after an action (and not part of the
# diagnosis it acted on) means the action made things worse. Drift, labels, host and GPU signals are not
# caused by a clamp, rollback or restart, so they never count against one.
HARM_SIGNALS = frozenset({"accuracy", "error_rate", "nonfinite_outputs", "weights_nonfinite",
                          "weights_exploding", "prediction_drift", "latency", "target_down", "request_stall"})

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


def judge(rec: ActionRecord, recovered: Recovered, known: frozenset[str] | set[str],
          active: Mapping[str, float], now: float, grace: float, verify_seconds: float,
          revert_on_worse: bool) -> Verdict:
    """The verdict on one action in verification.

    ``active`` maps the model's active signals to their onsets: a harm signal that started after the
    action (past ``grace``), was not among the symptoms it was meant to fix, and is unhealthy on data
    from a quarter of the verification window after the action on (labels arrive late: an accuracy drop
    noticed just after an action may be the fault's own, on predictions made before it) makes it WORSE.
    ``known`` are the signals ``recovered`` can answer for.
    """
    if rec.executed_at is None:
        return Verdict(Outcome.PENDING)
    since = rec.executed_at + grace
    settled = rec.executed_at + max(grace, verify_seconds / 4)
    if revert_on_worse and now > settled:
        worse = tuple(sorted(n for n, onset in active.items()
                             if n in HARM_SIGNALS and n not in rec.verify_signals and onset > since
                             and n in known and recovered(n, settled) is False))
        if worse:
            return Verdict(Outcome.WORSE, worse=worse)
    verdicts = {name: recovered(name, since) for name in rec.verify_signals if name in known}
    if verdicts and all(v is True for v in verdicts.values()):
        return Verdict(Outcome.VERIFIED, verdicts)
    if rec.verify_deadline is not None and now > rec.verify_deadline:
        return Verdict(Outcome.NOT_RECOVERED, verdicts)
    return Verdict(Outcome.PENDING, verdicts)
