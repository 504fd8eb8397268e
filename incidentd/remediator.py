"""Runs remediation for incidents under the policy: plan, execute off the detection thread, verify, audit."""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from diagnosis import lifecycle
from diagnosis.signals import SignalSpec, SourceLike
from diagnosis.types import ChangeKind, Evidence, EvidenceKind, Hypothesis, Incident, TimelineEntry, new_id
from incidentd.errors import Conflict
from incidentd.store import Store
from remediation.actions import ACTIONS, ActionContext
from remediation.policy import Policy
from remediation.types import ActionFailed, ActionKind, ActionMode, ActionRecord, ActionStatus, Plan

log = logging.getLogger(__name__)

# Symptoms an action on the model can cause. One of these starting after an action (and not part of the
# diagnosis it acted on) means the action made things worse. Drift, labels, host and GPU signals are not
# caused by a clamp, rollback or restart, so they never count against one.
HARM_SIGNALS = frozenset({"accuracy", "error_rate", "nonfinite_outputs", "weights_nonfinite",
                          "weights_exploding", "prediction_drift", "latency", "target_down", "request_stall"})


class Remediator:
    """Chooses nothing (diagnosis does); decides *whether* and *how* under the policy, then runs and verifies."""

    def __init__(self, store: Store, policy: Policy, ctx: ActionContext | None,
                 on_outcome: Callable[[str, str], None] | None = None,
                 guard: Callable[[ActionRecord], bool] | None = None):
        self.store = store
        self.guard = guard      # replicas: may this process run the action now (lease held, claim won)?
        self.policy = policy
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="action")
        self._last_block: dict[str, str] = {}
        self._lock = threading.Lock()
        self.on_outcome = on_outcome or (lambda kind, outcome: None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    # ------------------------------------------------------------------ records

    def records(self, incident_id: str | None = None, model: str | None = None) -> list[ActionRecord]:
        return [ActionRecord.from_dict(d) for d in self.store.actions(incident_id=incident_id, model=model)]

    def _save(self, rec: ActionRecord, entry: TimelineEntry | None = None) -> None:
        self.store.save_action(rec.to_dict())
        if entry is not None:
            self.store.append_timeline(rec.incident_id, entry)

    def in_flight(self, model: str) -> bool:
        return any(r.status.in_flight for r in self.records(model=model))

    # ------------------------------------------------------------------ deciding

    def consider(self, inc: Incident, top: Hypothesis, signals: list[str], now: float) -> ActionRecord | None:
        """Maybe start the action the top hypothesis recommends. Returns the new record, if any."""
        if top.recommended_action == "notify" or self.ctx is None:
            return None
        kind = ActionKind(top.recommended_action)
        incident_actions = self.records(incident_id=inc.id)
        if any(a.kind is kind for a in incident_actions):
            return None   # one action of a kind per incident; a failed one escalates instead of repeating
        decision = self.policy.decide(kind, top.confidence, incident_actions, self.records(model=inc.model),
                                      inc.escalated, now, root_cause=top.root_cause)
        if not decision.allowed and decision.escalate and not inc.escalated:
            entry = lifecycle.escalate(inc, now, f"{kind.value} not started: {decision.reason}")
            self.store.save_incident(inc, [entry])
            return None
        if not decision.allowed:
            key, shape = f"{inc.id}:{kind}", re.sub(r"\d+", "#", decision.reason)
            if self._last_block.get(key) != shape:   # once per reason, not once per countdown second
                self._last_block[key] = shape
                self.store.append_timeline(inc.id, TimelineEntry(now, "action_blocked",
                                           f"{kind.value} not started: {decision.reason}"))
            return None
        rec = ActionRecord(id=new_id("act"), incident_id=inc.id, model=inc.model, kind=kind, mode=decision.mode,
                           status=ActionStatus.EXECUTING, target="", plan={},
                           reason=f"{top.root_cause} (confidence {top.confidence:.2f}, rules {', '.join(top.rules)})",
                           idempotency_key=f"{inc.id}:{kind.value}", created_at=now, verify_signals=list(signals),
                           root_cause=top.root_cause)
        try:
            plan = ACTIONS[kind].plan(self.ctx, inc.model)
        except ActionFailed as e:
            rec.status = ActionStatus.FAILED
            rec.result = {"error": str(e), "retryable": e.retryable}
            rec.log("plan_failed", error=str(e))
            self._save(rec, TimelineEntry(now, "action_failed", f"could not plan {kind.value}: {e}",
                                          {"action_id": rec.id}))
            inc.action_ids.append(rec.id)
            return rec
        rec.target, rec.plan = plan.target, _plan_dict(plan)
        rec.log("planned", plan=rec.plan, mode=decision.mode.value)
        inc.action_ids.append(rec.id)
        if plan.noop:
            rec.status = ActionStatus.NOOP
            rec.log("noop", reason="target already in the desired state")
            self._save(rec, TimelineEntry(now, "action_noop", f"{kind.value}: nothing to do ({plan.description})",
                                          {"action_id": rec.id}))
            return rec
        if decision.mode is ActionMode.DRY_RUN:
            rec.status = ActionStatus.DRY_RUN
            try:
                rec.result = ACTIONS[kind].simulate(self.ctx, plan)
            except ActionFailed as e:
                rec.result = {"error": str(e)}
            rec.log("dry_run", result=rec.result)
            self._save(rec, TimelineEntry(now, "action_dry_run", f"dry run of {kind.value}: {plan.description}",
                                          {"action_id": rec.id, "result": rec.result}))
            return rec
        if decision.mode is ActionMode.APPROVE:
            rec.status = ActionStatus.AWAITING_APPROVAL
            self._save(rec, TimelineEntry(now, "action_awaiting_approval",
                                          f"plan awaits approval: {plan.description}", {"action_id": rec.id}))
            return rec
        self._save(rec, TimelineEntry(now, "action_started", f"{kind.value} started: {plan.description}",
                                      {"action_id": rec.id, "mode": rec.mode.value}))
        self._pool.submit(self._execute, rec.id)
        return rec

    def approve(self, action_id: str, actor: str) -> ActionRecord:
        rec = self._answer(action_id, actor, ActionStatus.EXECUTING, "approved")
        self._pool.submit(self._execute, rec.id)
        return rec

    def deny(self, action_id: str, actor: str) -> ActionRecord:
        return self._answer(action_id, actor, ActionStatus.DENIED, "denied")

    def _answer(self, action_id: str, actor: str, status: ActionStatus, verb: str) -> ActionRecord:
        """A person's answer to a plan awaiting approval, recorded in the audit trail and on the timeline."""
        rec = ActionRecord.from_dict(self.store.action(action_id))
        if rec.status is not ActionStatus.AWAITING_APPROVAL:
            raise Conflict(f"action {action_id} is {rec.status.value}, not awaiting approval")
        rec.status = status
        rec.log(verb, actor=actor)
        self._save(rec, TimelineEntry(time.time(), f"action_{verb}", f"{rec.kind.value} {verb} by {actor}",
                                      {"action_id": rec.id}))
        return rec

    # ------------------------------------------------------------------ executing

    def _execute(self, action_id: str) -> None:
        rec = ActionRecord.from_dict(self.store.action(action_id))
        if rec.status is not ActionStatus.EXECUTING or rec.executed_at is not None:
            return   # idempotent: an action runs once
        if self.guard is not None and not self.guard(rec):
            return   # another replica owns the model or already runs this action
        assert self.ctx is not None
        plan = _plan_from(rec)
        t0 = time.time()
        try:
            rec.result = ACTIONS[rec.kind].execute(self.ctx, plan)
        except Exception as e:   # boundary: an action must never take the loop down
            rec.status = ActionStatus.FAILED
            rec.result = {"error": str(e), "retryable": getattr(e, "retryable", False)}
            rec.executed_at = time.time()
            rec.log("execute_failed", error=str(e))
            log.exception("action %s (%s) failed", rec.id, rec.kind.value)
            self._save(rec, TimelineEntry(rec.executed_at, "action_failed", f"{rec.kind.value} failed: {e}",
                                          {"action_id": rec.id}))
            self.on_outcome(rec.kind.value, "failed")
            return
        rec.executed_at = time.time()
        rec.verify_deadline = rec.executed_at + self.policy.verify_seconds
        rec.status = ActionStatus.VERIFYING
        rec.log("executed", seconds=round(rec.executed_at - t0, 3), result=rec.result)
        self._save(rec, TimelineEntry(rec.executed_at, "action_executed",
                                      f"{rec.kind.value} executed in {rec.executed_at - t0:.1f}s; verifying for "
                                      f"up to {self.policy.verify_seconds:g}s", {"action_id": rec.id,
                                                                                 "result": rec.result}))
        change = {ActionKind.RESTART: ChangeKind.RESTART, ActionKind.ROLLBACK: ChangeKind.ROLLBACK}.get(rec.kind)
        if change is not None:
            self.store.save_evidence(Evidence(new_id("chg"), EvidenceKind.CHANGE, rec.model, change.value,
                                              rec.executed_at, f"{change.value} by incidentd ({rec.id})",
                                              attributes={"action_id": rec.id, "by": "incidentd",
                                                          **{k: v for k, v in rec.result.items()
                                                             if isinstance(v, (str, int, float))}}))

    def execute_later(self, action_id: str) -> None:
        """Run an action recorded as executing (approved on another replica) on this one's action thread."""
        self._pool.submit(self._execute, action_id)

    def reconcile(self, model: str | None = None, ids: set[str] | None = None) -> list[str]:
        """After a service restart (or a replica's death, for the models it owned): actions caught
        mid-execution are verified rather than re-run blindly."""
        fixed = []
        for rec in self.records(model=model):
            if rec.status is ActionStatus.EXECUTING and (ids is None or rec.id in ids):
                rec.executed_at = rec.executed_at or time.time()
                rec.verify_deadline = time.time() + self.policy.verify_seconds
                rec.status = ActionStatus.VERIFYING
                rec.log("reconciled", note="service restarted during execution; verifying the outcome")
                self._save(rec, TimelineEntry(time.time(), "action_reconciled",
                                              f"{rec.kind.value}: service restarted mid-action; verifying outcome",
                                              {"action_id": rec.id}))
                fixed.append(rec.id)
        return fixed

    # ------------------------------------------------------------------ verifying

    def verify(self, inc: Incident, specs: dict[str, SignalSpec], source: SourceLike, now: float,
               version: str | None, grace: float, active: dict[str, float] | None = None) -> list[TimelineEntry]:
        """Check every action in verification on this incident; returns timeline entries for the incident.

        ``active`` maps the model's active signals to their onsets: a harm signal that started after the
        action (past ``grace``), was not among the symptoms it was meant to fix, and is unhealthy on data
        from a quarter of the verification window after the action on (labels arrive late: an accuracy drop
        noticed just after an action may be the fault's own, on predictions made before it) makes it a
        regression; the action is reverted (when it can be) and the incident escalated.
        """
        entries: list[TimelineEntry] = []
        for rec in self.records(incident_id=inc.id):
            if rec.status is not ActionStatus.VERIFYING or rec.executed_at is None:
                continue
            since = rec.executed_at + grace
            settled = rec.executed_at + max(grace, self.policy.verify_seconds / 4)
            worse = sorted(n for n, onset in (active or {}).items()
                           if n in HARM_SIGNALS and n not in rec.verify_signals and onset > since
                           and n in specs and now > settled
                           and specs[n].recovered(source, inc.model, settled, now, version=version) is False)
            if worse and self.policy.revert_on_worse:
                entries.append(self._revert(inc, rec, worse, now))
                continue
            verdicts = {name: specs[name].recovered(source, inc.model, since, now, version=version)
                        for name in rec.verify_signals if name in specs}
            if verdicts and all(v is True for v in verdicts.values()):
                rec.status = ActionStatus.VERIFIED
                rec.verified_at = now
                rec.log("verified", signals=verdicts, seconds=round(now - rec.executed_at, 2))
                self._save(rec)
                entries.append(lifecycle.mitigate(inc, now, f"{rec.kind.value} verified: "
                                                  f"{', '.join(verdicts)} recovered "
                                                  f"{now - rec.executed_at:.1f}s after the action"))
                self.on_outcome(rec.kind.value, "verified")
            elif rec.verify_deadline is not None and now > rec.verify_deadline:
                rec.status = ActionStatus.NOT_RECOVERED
                rec.log("not_recovered", signals={k: v for k, v in verdicts.items()})
                self._save(rec)
                entries.append(lifecycle.escalate(
                    inc, now, f"{rec.kind.value} did not bring {', '.join(verdicts) or 'the signals'} back within "
                              f"{self.policy.verify_seconds:g}s; the change is left in place and incidentd stops "
                              "acting on this incident: a person decides"))
                self.on_outcome(rec.kind.value, "not_recovered")
        return entries

    def _revert(self, inc: Incident, rec: ActionRecord, worse: list[str], now: float) -> TimelineEntry:
        assert self.ctx is not None
        try:
            undone = ACTIONS[rec.kind].revert(self.ctx, _plan_from(rec), rec.result)
        except Exception as e:   # boundary: a failed undo is reported, never raised into the loop
            undone = {"error": str(e)}
            log.exception("revert of %s (%s) failed", rec.id, rec.kind.value)
        rec.status = ActionStatus.REVERTED if undone and "error" not in undone else ActionStatus.NOT_RECOVERED
        rec.log("worse", new_symptoms=worse, revert=undone)
        self._save(rec)
        self.on_outcome(rec.kind.value, "reverted" if rec.status is ActionStatus.REVERTED else "worse")
        if rec.status is ActionStatus.REVERTED:
            what = f"reverted it ({_describe(undone)})"
        elif undone is None:
            what = f"{rec.kind.value} cannot be undone"
        else:
            what = f"the revert failed: {undone['error']}"
        return lifecycle.escalate(inc, now, f"{', '.join(worse)} started after the {rec.kind.value} "
                                            f"{now - (rec.executed_at or now):.1f}s ago: the action made things "
                                            f"worse; {what}; incidentd stops acting on this incident")


def _describe(result: dict) -> str:
    if "from" in result and "to" in result:
        return f"{result['from']} -> {result['to']}"
    if "previous" in result and "current" in result:
        return f"{result['previous']} -> {result['current']}"
    return ", ".join(f"{k}={v}" for k, v in list(result.items())[:3])


def _plan_dict(plan: Plan) -> dict:
    return {"kind": plan.kind.value, "target": plan.target, "params": plan.params, "description": plan.description,
            "noop": plan.noop}


def _plan_from(rec: ActionRecord) -> Plan:
    p = rec.plan
    return Plan(ActionKind(p["kind"]), p["target"], p.get("params", {}), p.get("description", ""),
                p.get("noop", False))
