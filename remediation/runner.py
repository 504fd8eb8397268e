"""Runs remediation for incidents under the policy: plan, execute off the detection thread, verify, audit.

Diagnosis chooses what to do (a hypothesis's recommended action); the runner decides *whether* and *how*
under the :class:`~remediation.policy.Policy`, runs the action, verifies it (:mod:`remediation.verify`)
and reverts it when it made things worse. Everything it does goes through an :class:`ActionStore`.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

from diagnosis import lifecycle
from diagnosis.signals import ProportionSpec, SignalSpec, SourceLike
from diagnosis.types import (
    ChangeKind,
    Evidence,
    EvidenceKind,
    Hypothesis,
    Incident,
    IncidentStatus,
    TimelineEntry,
    TimelineKind,
    new_id,
)
from remediation import approval
from remediation.actions import ACTIONS, ActionContext
from remediation.policy import Policy
from remediation.types import (
    ActionFailed,
    ActionKind,
    ActionMode,
    ActionRecord,
    ActionResult,
    ActionStatus,
    Applied,
    ApprovalRefused,
    NotAwaitingApproval,
    Readback,
)
from remediation.verify import BY_VERSION, Outcome, Recovered, Verdict, judge, regroup

log = logging.getLogger(__name__)


class ActionStore(Protocol):
    """The storage the runner needs: action records, incidents with their timelines, and evidence."""

    def save_action(self, rec: ActionRecord) -> None: ...

    def action(self, action_id: str) -> ActionRecord: ...

    def actions(self, incident_id: str | None = None, model: str | None = None,
                statuses: tuple[ActionStatus, ...] = ()) -> list[ActionRecord]: ...

    def incident(self, incident_id: str) -> Incident: ...

    def evidence(self, ids: Sequence[str]) -> list[Evidence]: ...

    def save_incident(self, inc: Incident, timeline: Sequence[TimelineEntry] | None = None) -> Incident | None: ...

    def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None: ...

    def save_evidence(self, ev: Evidence) -> None: ...


class ExecutionGuard(Protocol):
    """Replicas: may this process run the action now? (It holds the model's lease and won the atomic claim
    of the action row.) Checked right before an action executes; False means another replica runs it."""

    def __call__(self, rec: ActionRecord) -> bool: ...


def _no_outcome(kind: str, outcome: str) -> None:
    return None


class ActionRunner:
    """Chooses nothing (diagnosis does); decides *whether* and *how* under the policy, then runs and verifies."""

    def __init__(self, store: ActionStore, policy: Policy, ctx: ActionContext | None,
                 on_outcome: Callable[[str, str], None] | None = None, clock: Callable[[], float] = time.time,
                 approval_rules: approval.ApprovalRules | None = None, guard: ExecutionGuard | None = None):
        self.store = store
        self.approval = approval_rules or approval.ApprovalRules()
        self.guard = guard      # replicas: may this process run the action now (lease held, claim won)?
        self.policy = policy
        self.ctx = ctx
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="action")
        # (model, incident, kind) -> shape of the last reason an action was blocked for
        self._last_block: dict[tuple[str, str, ActionKind], str] = {}
        self._lock = threading.Lock()
        self.on_outcome = on_outcome or _no_outcome

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    def forget(self, model: str) -> None:
        """Drop what the runner remembers about a model (it has not been seen for long)."""
        with self._lock:
            for key in [k for k in self._last_block if k[0] == model]:
                del self._last_block[key]

    # ------------------------------------------------------------------ records

    def records(self, incident_id: str | None = None, model: str | None = None) -> list[ActionRecord]:
        return self.store.actions(incident_id=incident_id, model=model)

    def _save(self, rec: ActionRecord, entry: TimelineEntry | None = None) -> None:
        self.store.save_action(rec)
        if entry is not None:
            self.store.append_timeline(rec.incident_id, entry)

    def in_flight(self, model: str) -> bool:
        return any(r.status.in_flight for r in self.records(model=model))

    # ------------------------------------------------------------------ deciding

    def consider(self, inc: Incident, top: Hypothesis, signals: Sequence[str],
                 now: float, shared: Sequence[str] = ()) -> tuple[Incident, ActionRecord | None]:
        """Maybe start the action a hypothesis (the top one, or another simultaneous cause) recommends.

        ``signals`` are what the action is verified on; ``shared`` those of them another simultaneous cause
        also moves (see :func:`remediation.verify.own_symptoms`). Returns the incident as it is now (saved
        when it changed) and the new action record, if any.
        """
        kind = top.recommended_action
        if not kind.changes_model or self.ctx is None:
            return inc, None
        incident_actions = self.records(incident_id=inc.id)
        # One action of a kind per incident. A plan that expired unanswered may be planned again; a transient
        # failure (timeout, 5xx) may be retried, under the policy's cooldown; any other failure escalated when
        # it was judged (see ``verify``). A verified one does not block either once the incident is open again:
        # its fault came back (reopened).
        reopened = inc.status is not IncidentStatus.MITIGATED
        if any(a.kind is kind and a.status is not ActionStatus.EXPIRED and not _retryable_failure(a)
               and not (reopened and a.status is ActionStatus.VERIFIED)
               for a in incident_actions):
            return inc, None
        decision = self.policy.decide(kind, top.confidence, incident_actions, self.records(model=inc.model),
                                      inc.escalated, now, root_cause=top.root_cause)
        # issue 12: a change event nobody authenticated never starts an action on its own.
        decision = approval.without_unauthenticated_trigger(decision, kind, self.store.evidence(top.evidence_ids))
        if not decision.allowed and decision.escalate and not inc.escalated:
            inc, entry = lifecycle.escalate(inc, now, f"{kind.value} not started: {decision.reason}")
            self.store.save_incident(inc, [entry])
            return inc, None
        if not decision.allowed:
            key, shape = (inc.model, inc.id, kind), re.sub(r"\d+", "#", decision.reason)
            with self._lock:
                first = self._last_block.get(key) != shape   # once per reason, not once per countdown second
                self._last_block[key] = shape
            if first:
                self.store.append_timeline(inc.id, TimelineEntry(now, TimelineKind.ACTION_BLOCKED,
                                                                 f"{kind.value} not started: {decision.reason}"))
            return inc, None
        rec = ActionRecord(id=new_id("act"), incident_id=inc.id, model=inc.model, kind=kind, mode=decision.mode,
                           status=ActionStatus.EXECUTING,
                           reason=f"{top.root_cause} (confidence {top.confidence:.2f}, rules {', '.join(top.rules)})",
                           idempotency_key=_idempotency_key(inc.id, kind, incident_actions), created_at=now,
                           verify_signals=tuple(signals), root_cause=top.root_cause,
                           shared_signals=tuple(shared))
        inc = inc.with_action(rec.id)
        try:
            plan = ACTIONS[kind].plan(self.ctx, inc.model)
        except ActionFailed as e:
            rec = replace(rec, status=ActionStatus.FAILED, result=ActionResult.failed(str(e), e.retryable))
            rec = rec.logged(self.clock(), "plan_failed", error=str(e))
            self._save(rec, TimelineEntry(now, TimelineKind.ACTION_FAILED, f"could not plan {kind.value}: {e}",
                                          {"action_id": rec.id}))
            self.store.save_incident(inc)
            return inc, rec
        rec = replace(rec, plan=plan).logged(self.clock(), "planned", plan=plan.to_dict(), mode=decision.mode.value)
        self.store.save_incident(inc)
        if plan.noop:
            rec = replace(rec, status=ActionStatus.NOOP).logged(self.clock(), "noop",
                                                                reason="target already in the desired state")
            self._save(rec, TimelineEntry(now, TimelineKind.ACTION_NOOP,
                                          f"{kind.value}: nothing to do ({plan.description})", {"action_id": rec.id}))
            return inc, rec
        if decision.mode is ActionMode.DRY_RUN:
            try:
                result = ActionResult(ACTIONS[kind].simulate(self.ctx, plan))
            except ActionFailed as e:
                result = ActionResult.failed(str(e), e.retryable)
            rec = replace(rec, status=ActionStatus.DRY_RUN, result=result)
            rec = rec.logged(self.clock(), "dry_run", result=result.to_dict())
            self._save(rec, TimelineEntry(now, TimelineKind.ACTION_DRY_RUN,
                                          f"dry run of {kind.value}: {plan.description}",
                                          {"action_id": rec.id, "result": result.to_dict()}))
            return inc, rec
        if decision.mode is ActionMode.APPROVE:
            rec = replace(rec, status=ActionStatus.AWAITING_APPROVAL)
            self._save(rec, TimelineEntry(now, TimelineKind.ACTION_AWAITING_APPROVAL,
                                          f"plan awaits approval: {plan.description}", {"action_id": rec.id}))
            return inc, rec
        self._save(rec, TimelineEntry(now, TimelineKind.ACTION_STARTED, f"{kind.value} started: {plan.description}",
                                      {"action_id": rec.id, "mode": rec.mode.value}))
        self._pool.submit(self._execute, rec.id)
        return inc, rec

    def approve(self, action_id: str, actor: str) -> ActionRecord:
        """A person approves a plan: it runs only if it has not expired and the policy, decided again on the
        current diagnosis, still allows it (and, with two-person approval, a second person approved it)."""
        now = self.clock()
        rec = self.store.action(action_id)
        if rec.status is ActionStatus.AWAITING_APPROVAL:
            inc = self.store.incident(rec.incident_id)
            check = approval.check_approval(self.policy, self.approval, rec, list(inc.hypotheses), inc.escalated,
                                            self.records(incident_id=rec.incident_id),
                                            self.records(model=rec.model), actor, now)
            if check.expired:
                self.expire_pending(now)
                raise ApprovalRefused(f"action {action_id}: {check.reason}")
            if check.needs_another:
                rec = rec.logged(now, "approval_recorded", actor=actor)
                self._save(rec, TimelineEntry(now, TimelineKind.ACTION_APPROVAL_RECORDED,
                                              f"{rec.kind.value} approved by {actor} (1 of 2); a second person "
                                              "must approve", {"action_id": rec.id, "actor": actor}))
                return rec
            if not check.allowed:
                rec = rec.logged(now, "approval_refused", actor=actor, reason=check.reason)
                self._save(rec, TimelineEntry(now, TimelineKind.ACTION_APPROVAL_REFUSED,
                                              f"{rec.kind.value} approval by {actor} refused: {check.reason}",
                                              {"action_id": rec.id, "actor": actor}))
                raise ApprovalRefused(f"action {action_id} not approved: {check.reason}")
        rec = self._answer(action_id, actor, ActionStatus.EXECUTING, TimelineKind.ACTION_APPROVED, "approved")
        self._pool.submit(self._execute, rec.id)
        return rec

    def expire_pending(self, now: float) -> list[str]:
        """Plans unanswered past the approval timeout expire; they block nothing afterwards."""
        expired = []
        for rec in self.store.actions(statuses=(ActionStatus.AWAITING_APPROVAL,)):
            if self.approval.expired(rec.created_at, now):
                rec = replace(rec, status=ActionStatus.EXPIRED).logged(
                    now, "expired", timeout_seconds=self.approval.timeout_seconds)
                self._save(rec, TimelineEntry(now, TimelineKind.ACTION_EXPIRED,
                                              f"{rec.kind.value} plan expired: nobody answered within "
                                              f"{self.approval.timeout_seconds:g}s; it blocks nothing now",
                                              approval.expiry_entry_data(rec)))
                expired.append(rec.id)
        return expired

    def deny(self, action_id: str, actor: str) -> ActionRecord:
        return self._answer(action_id, actor, ActionStatus.DENIED, TimelineKind.ACTION_DENIED, "denied")

    def _answer(self, action_id: str, actor: str, status: ActionStatus, kind: TimelineKind,
                verb: str) -> ActionRecord:
        """A person's answer to a plan awaiting approval, recorded in the audit trail and on the timeline."""
        rec = self.store.action(action_id)
        if rec.status is not ActionStatus.AWAITING_APPROVAL:
            raise NotAwaitingApproval(f"action {action_id} is {rec.status.value}, not awaiting approval")
        now = self.clock()
        rec = replace(rec, status=status).logged(now, verb, actor=actor)
        self._save(rec, TimelineEntry(now, kind, f"{rec.kind.value} {verb} by {actor}",
                                      {"action_id": rec.id, "actor": actor}))
        return rec

    # ------------------------------------------------------------------ executing

    def _execute(self, action_id: str) -> None:
        rec = self.store.action(action_id)
        if rec.status is not ActionStatus.EXECUTING or rec.executed_at is not None or rec.plan is None:
            return   # idempotent: an action runs once
        if self.guard is not None and not self.guard(rec):
            return   # another replica owns the model or already runs this action
        assert self.ctx is not None
        plan = rec.plan
        t0 = self.clock()
        try:
            result = ActionResult(ACTIONS[rec.kind].execute(self.ctx, plan))
        except Exception as e:   # boundary: an action must never take the loop down
            at = self.clock()
            rec = replace(rec, status=ActionStatus.FAILED, executed_at=at,
                          result=ActionResult.failed(str(e), getattr(e, "retryable", False)))
            rec = rec.logged(at, "execute_failed", error=str(e))
            log.exception("action %s (%s) failed", rec.id, rec.kind.value)
            self._save(rec, TimelineEntry(at, TimelineKind.ACTION_FAILED, f"{rec.kind.value} failed: {e}",
                                          {"action_id": rec.id}))
            self.on_outcome(rec.kind.value, "failed")
            return
        at = self.clock()
        rec = replace(rec, executed_at=at, verify_deadline=at + self.policy.verify_seconds,
                      status=ActionStatus.VERIFYING, result=result)
        rec = rec.logged(at, "executed", seconds=round(at - t0, 3), result=result.to_dict())
        self._save(rec, TimelineEntry(at, TimelineKind.ACTION_EXECUTED,
                                      f"{rec.kind.value} executed in {at - t0:.1f}s; verifying for "
                                      f"up to {self.policy.verify_seconds:g}s",
                                      {"action_id": rec.id, "result": result.to_dict()}))
        self._record_change(rec, at, result)

    def _record_change(self, rec: ActionRecord, at: float, result: ActionResult) -> None:
        """A rollback or restart is a change the diagnosis sees, like any deploy."""
        change = {ActionKind.RESTART: ChangeKind.RESTART, ActionKind.ROLLBACK: ChangeKind.ROLLBACK}.get(rec.kind)
        if change is not None:
            self.store.save_evidence(Evidence(new_id("chg"), EvidenceKind.CHANGE, rec.model, change.value, at,
                                              f"{change.value} by incidentd ({rec.id})",
                                              attributes={"action_id": rec.id, "by": "incidentd",
                                                          **{k: v for k, v in result.data.items()
                                                             if isinstance(v, (str, int, float))}}))

    def execute_later(self, action_id: str) -> None:
        """Run an action recorded as executing (approved on another replica) on this one's action thread."""
        self._pool.submit(self._execute, action_id)

    def reconcile(self, model: str | None = None, ids: set[str] | None = None) -> list[str]:
        """After a service restart (or a replica's death, for the models it owned): actions caught
        mid-execution are read back from the server, never re-run blindly nor assumed done.

        Done (the server shows the change) -> verifying, judged only on data after this read-back; not done,
        or the server cannot tell -> failed and retryable (actions are idempotent: the policy may run it
        again). Returns the ids reconciled.
        """
        fixed = []
        for rec in self.records(model=model):
            if rec.status is ActionStatus.EXECUTING and (ids is None or rec.id in ids):
                self._save(*self._read_back(rec))
                fixed.append(rec.id)
        return fixed

    def _read_back(self, rec: ActionRecord) -> tuple[ActionRecord, TimelineEntry]:
        if rec.plan is None or self.ctx is None:
            back = Readback(Applied.UNKNOWN, {}, "no plan or no executor to read the server back with")
        else:
            try:
                back = ACTIONS[rec.kind].readback(self.ctx, rec.plan)
            except Exception as e:   # boundary: this runs at start-up; an odd answer must not stop the service
                log.exception("reading back action %s (%s) failed", rec.id, rec.kind.value)
                back = Readback(Applied.UNKNOWN, {"error": str(e)}, f"reading the server back failed: {e}")
        now = self.clock()   # after the read-back: verification judges only data newer than what it saw
        data = {"action_id": rec.id, "readback": back.to_dict()}
        if back.done:
            # "from"/"to" as an executed rollback reports them: verification by version and revert read them
            plan = dict(rec.plan.params) if rec.plan is not None else {}
            result = ActionResult({"reconciled": True, **{k: plan[k] for k in ("from", "to") if k in plan},
                                   **{f"shown_{k}": v for k, v in back.shown.items()}})
            rec = replace(rec, executed_at=now, verify_deadline=now + self.policy.verify_seconds,
                          status=ActionStatus.VERIFYING, result=result)
            self._record_change(rec, now, result)
            rec = rec.logged(now, "reconciled", outcome="done", readback=back.to_dict(),
                             note="service restarted during execution; the server shows it done: verifying")
            log.warning("action %s (%s) reconciled after a restart: done (%s)", rec.id, rec.kind.value,
                        back.summary)
            return rec, TimelineEntry(now, TimelineKind.ACTION_RECONCILED,
                                      f"{rec.kind.value}: service restarted mid-action; the server shows it done "
                                      f"({back.summary}); verifying on fresh data", data)
        why = ("the server does not show it done" if back.applied is Applied.NOT_DONE
               else "the server could not tell whether it was done")
        error = f"the service was killed before the server showed the {rec.kind.value} done: {why} ({back.summary})"
        # Not done: nothing ran on the server, so no cooldown starts (the retry may run at once). Unknown: it
        # may have run, and counts as run.
        ran = rec.executed_at if back.applied is Applied.NOT_DONE else (rec.executed_at or now)
        rec = replace(rec, status=ActionStatus.FAILED, executed_at=ran,
                      result=ActionResult.failed(error, retryable=True))
        rec = rec.logged(now, "reconciled", outcome=back.applied.value, readback=back.to_dict(), error=error)
        log.warning("action %s (%s) reconciled after a restart: failed, retryable (%s)", rec.id, rec.kind.value,
                    back.summary)
        self.on_outcome(rec.kind.value, "failed")
        return rec, TimelineEntry(now, TimelineKind.ACTION_RECONCILED,
                                  f"{rec.kind.value}: {error}; it may run again under the policy", data)

    # ------------------------------------------------------------------ verifying

    def verify(self, inc: Incident, specs: Mapping[str, SignalSpec], source: SourceLike, now: float,
               version: str | None, grace: float,
               active: Mapping[str, float] | None = None) -> tuple[Incident, list[TimelineEntry]]:
        """Check every action in verification on this incident (see :func:`remediation.verify.judge`).

        Returns the incident after the verdicts (mitigated or escalated) and the timeline entries for it;
        the caller saves them. A regression is reverted (when it can be) and the incident escalated.
        """
        entries: list[TimelineEntry] = []

        def judged_by(rec: ActionRecord) -> Recovered:
            previous = rec.result.data.get("from") if rec.result is not None else None

            def recovered(name: str, since: float) -> bool | None:
                spec = specs[name]
                if (name in rec.shared_signals and rec.kind is ActionKind.ROLLBACK and version is not None
                        and isinstance(previous, str) and isinstance(spec, ProportionSpec)):
                    # another cause (a data shift) holds this rate down too: judge what the version lost
                    return spec.recovered_by_version(inc.model, since, now, version, previous)
                return spec.recovered(source, inc.model, since, now, version=version)
            return recovered

        model_records = self.records(model=inc.model)
        records = [r for r in model_records if r.incident_id == inc.id]
        for rec in records:
            if rec.status is ActionStatus.FAILED and not _retryable_failure(rec) and not inc.escalated:
                # Retrying cannot fix it (corrupt or missing checkpoint, refused, permission): say so at once.
                error = rec.result.error if rec.result is not None else "no result recorded"
                inc, entry = lifecycle.escalate(inc, now, f"{rec.kind.value} failed and retrying cannot fix it: "
                                                          f"{error}; a person decides")
                entries.append(entry)
                continue
            executed_at = rec.executed_at
            if rec.status is not ActionStatus.VERIFYING or executed_at is None:
                continue
            # Symptoms another simultaneous cause of the incident explains (now: it may have appeared after
            # the action started) are that cause's, not this action's.
            attributed = {n for h in inc.causes if h.root_cause != rec.root_cause for n in (*h.explains, *h.affects)}
            judged = regroup(rec, attributed)
            v = judge(judged, judged_by(judged), set(specs), before_later_actions(rec, model_records, active or {}),
                      now, grace, self.policy.verify_seconds, self.policy.revert_on_worse, attributed=attributed)
            left: tuple[str, ...] = ()    # symptoms still below their baseline that the version no longer explains
            if v.outcome is Outcome.NOT_RECOVERED and (by_version := _by_version(judged, v, judged_by)):
                left = tuple(by_version)
                judged = replace(judged, shared_signals=tuple(sorted(set(judged.shared_signals) | set(left))))
                v = Verdict(Outcome.VERIFIED, {**v.signals, **by_version})
            if v.outcome is Outcome.WORSE:
                inc, entry = self._revert(inc, rec, list(v.worse), now)
                entries.append(entry)
            elif v.outcome is Outcome.VERIFIED:
                rec = replace(rec, status=ActionStatus.VERIFIED, verified_at=now,
                              shared_signals=judged.shared_signals)
                self._save(rec.logged(self.clock(), "verified", signals=dict(v.signals),
                                      seconds=round(now - executed_at, 2)))
                message = (f"{rec.kind.value} verified: {', '.join(v.signals)} recovered "
                           f"{now - executed_at:.1f}s after the action"
                           + (f" (judged by version: {', '.join(judged.shared_signals)})"
                              if judged.shared_signals else ""))
                fixed = {r.root_cause for r in records if r.status is ActionStatus.VERIFIED} | {rec.root_cause}
                remaining = lifecycle.remaining_causes(inc, fixed)
                if remaining:
                    inc, entry = lifecycle.fix_one(inc, now, rec.root_cause, f"{message}: {rec.root_cause} is fixed",
                                                   remaining)
                elif left:
                    inc, entry = lifecycle.fix_with_symptoms_left(inc, now, rec.root_cause, message, left)
                else:
                    inc, entry = lifecycle.mitigate(inc, now, message)
                entries.append(entry)
                self.on_outcome(rec.kind.value, "verified")
            elif v.outcome is Outcome.NOT_RECOVERED and (wait := self._wait_longer(inc, rec, records, v, now)):
                later, holders = wait
                rec = replace(rec, verify_deadline=later)
                self._save(rec.logged(self.clock(), "verification_extended", until=later, causes=holders,
                                      signals=dict(v.signals)))
                entries.append(TimelineEntry(now, TimelineKind.ACTION_VERIFICATION_EXTENDED,
                                             f"{rec.kind.value} not verified yet: no fresh data for "
                                             f"{', '.join(v.signals)} since the action, and {', '.join(holders)} "
                                             f"may be holding it back; verification waits {later - now:.0f}s "
                                             "more (missing data is never recovery)", {"action_id": rec.id}))
            elif v.outcome is Outcome.PENDING:
                self._note_waiting(rec, v, now, grace)
            elif v.outcome is Outcome.NOT_RECOVERED:
                rec = replace(rec, status=ActionStatus.NOT_RECOVERED)
                self._save(rec.logged(self.clock(), "not_recovered", signals=dict(v.signals)))
                what = (f"could not be verified: no fresh data for {', '.join(v.signals)} within "
                        f"{self.policy.verify_seconds:g}s (missing data is never recovery)"
                        if v.no_data else
                        f"did not bring {', '.join(v.signals) or 'the signals'} back within "
                        f"{self.policy.verify_seconds:g}s")
                inc, entry = lifecycle.escalate(
                    inc, now, f"{rec.kind.value} {what}; the change is left in place and incidentd stops "
                              "acting on this incident: a person decides")
                entries.append(entry)
                self.on_outcome(rec.kind.value, "not_recovered")
        return inc, entries

    def _wait_longer(self, inc: Incident, rec: ActionRecord, records: Sequence[ActionRecord], v: Verdict,
                     now: float) -> tuple[float, list[str]] | None:
        """A new verification deadline for an action that had no fresh data at all to be judged on, when
        another simultaneous cause of the incident may be what holds the data back (a starved server answers
        few requests, so few labels come): one more window after that cause's fix, up to three windows in
        all; with the causes that may hold the data back. None: judge it now."""
        if not v.no_data or rec.executed_at is None:
            return None
        window = self.policy.verify_seconds
        others = {h.root_cause for h in inc.causes
                  if h.root_cause != rec.root_cause and h.recommended_action.changes_model}
        fixes = [r.executed_at for r in records if r.root_cause in others and r.executed_at is not None
                 and r.executed_at > rec.executed_at and r.status.executed]
        unfixed = others - {r.root_cause for r in records if r.status.executed}
        if not fixes and not unfixed:
            return None
        # a cause not fixed yet: wait a window from now; all fixed: a window after the last of those fixes
        later = min(rec.executed_at + 3 * window, (now if unfixed else max(fixes)) + window)
        return (later, sorted(others)) if later > now else None

    def _note_waiting(self, rec: ActionRecord, v: Verdict, now: float, grace: float) -> None:
        """Keep ``awaiting_data_since`` true to the verdict: set once its signals have had no fresh data for a
        quarter of the window (then it stops holding back another cause's fix), cleared when data comes."""
        assert rec.executed_at is not None
        settled = rec.executed_at + max(grace, self.policy.verify_seconds / 4)
        waiting = v.no_data and now > settled
        if waiting == (rec.awaiting_data_since is not None):
            return
        rec = replace(rec, awaiting_data_since=now if waiting else None)
        self._save(rec.logged(self.clock(), "awaiting_data" if waiting else "data_back", signals=dict(v.signals)))

    def _revert(self, inc: Incident, rec: ActionRecord, worse: list[str],
                now: float) -> tuple[Incident, TimelineEntry]:
        assert self.ctx is not None and rec.plan is not None
        undone: ActionResult | None
        try:
            data = ACTIONS[rec.kind].revert(self.ctx, rec.plan, dict(rec.result.data) if rec.result else {})
            undone = None if data is None else ActionResult(data)
        except Exception as e:   # boundary: a failed undo is reported, never raised into the loop
            undone = ActionResult.failed(str(e))
            log.exception("revert of %s (%s) failed", rec.id, rec.kind.value)
        reverted = undone is not None and bool(undone.data) and undone.ok and "error" not in undone.data
        rec = replace(rec, status=ActionStatus.REVERTED if reverted else ActionStatus.NOT_RECOVERED)
        self._save(rec.logged(self.clock(), "worse", new_symptoms=worse,
                              revert=undone.to_dict() if undone is not None else None))
        self.on_outcome(rec.kind.value, "reverted" if reverted else "worse")
        if reverted and undone is not None:
            what = f"reverted it ({_describe(undone.data)})"
        elif undone is None:
            what = f"{rec.kind.value} cannot be undone"
        else:
            what = f"the revert failed: {undone.error}"
        return lifecycle.escalate(inc, now, f"{', '.join(worse)} started after the {rec.kind.value} "
                                            f"{now - (rec.executed_at or now):.1f}s ago: the action made things "
                                            f"worse; {what}; incidentd stops acting on this incident")


def _by_version(rec: ActionRecord, v: Verdict, judged_by: Callable[[ActionRecord], Recovered]) -> dict[str, bool]:
    """A rollback whose window ended with rates still below their baseline, judged on what is attributable to
    the version, through the same judge as the rates another cause shares (``judged_by`` with them shared):
    the restored version's rate against the one it replaced. A data shift not diagnosed yet (its drift test
    needs rows) holds accuracy down whatever version serves; the rollback did its part when the restored
    version clearly beats the bad one. The signals so judged, all True, or {} (judged as it stands)."""
    failed = [n for n, ok in v.signals.items() if ok is False]
    if (rec.kind is not ActionKind.ROLLBACK or rec.executed_at is None or not failed
            or any(ok is not True for n, ok in v.signals.items() if n not in failed)
            or not set(failed) <= BY_VERSION):
        return {}
    recovered = judged_by(replace(rec, shared_signals=tuple(sorted(set(rec.shared_signals) | set(failed)))))
    if all(recovered(name, rec.executed_at) is True for name in failed):
        return dict.fromkeys(failed, True)
    return {}


def before_later_actions(rec: ActionRecord, model_actions: Sequence[ActionRecord],
                         active: Mapping[str, float]) -> dict[str, float]:
    """The active signals (name -> onset) that ``rec`` may answer for: those that started before any later
    action on the same model began. A restart's own downtime (the target down, requests stalled while the
    server comes back) is that restart's to answer for, never the rollback verifying beside it."""
    assert rec.executed_at is not None
    later = [a.created_at for a in model_actions
             if a.id != rec.id and a.created_at > rec.executed_at
             and a.status.executed and a.status is not ActionStatus.NOOP]
    if not later:
        return dict(active)
    first = min(later)
    return {name: onset for name, onset in active.items() if onset < first}


def _describe(result: Mapping[str, Any]) -> str:
    if "from" in result and "to" in result:
        return f"{result['from']} -> {result['to']}"
    if "previous" in result and "current" in result:
        return f"{result['previous']} -> {result['current']}"
    return ", ".join(f"{k}={v}" for k, v in list(result.items())[:3])


def _retryable_failure(rec: ActionRecord) -> bool:
    """A failed action whose error is transient (a timeout, a 5xx): it may run again under the cooldown."""
    return rec.status is ActionStatus.FAILED and rec.result is not None and rec.result.retryable


def _idempotency_key(incident_id: str, kind: ActionKind, incident_actions: Sequence[ActionRecord]) -> str:
    """One key per action attempt: the first of a kind on an incident is ``<incident>:<kind>``; a later one
    (a plan that expired unanswered, a retry after a transient failure, the fix of a reopened incident) adds
    its attempt number. The store keeps keys unique."""
    attempt = sum(1 for a in incident_actions if a.kind is kind)
    return f"{incident_id}:{kind.value}" + (f":{attempt + 1}" if attempt else "")
