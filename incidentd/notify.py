"""Escalations reach people: incidents that need a person are sent to the team's Alertmanager as alerts.

Alertmanager's API v2 (``POST /api/v2/alerts``, a JSON list of postable alerts with ``labels``,
``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``) takes them; its own routing then pages,
posts to Slack or mails. Like Prometheus, incidentd re-sends every firing alert each cycle with an
``endsAt`` a few cycles ahead, so a stopped incidentd lets them expire rather than leaving them firing,
and sends ``endsAt`` = the resolve time once the incident resolves. Several URLs (an HA pair) each get
every alert; Alertmanager deduplicates. An optional generic webhook gets the same list as JSON.
"""
from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from diagnosis.types import ActionKind, Incident

log = logging.getLogger(__name__)


class Reason(enum.StrEnum):
    ESCALATION = "escalation"   # incidentd stopped acting (a guard held, an action failed or did not help)
    APPROVAL = "approval"       # an action waits for a person's approval
    NOTIFY = "notify"           # the diagnosis recommends telling people, changing nothing


ALERTNAMES = {Reason.ESCALATION: "IncidentdEscalation", Reason.APPROVAL: "IncidentdApprovalRequired",
              Reason.NOTIFY: "IncidentdNotify"}


def reason_for(inc: Incident, awaiting_approval: bool) -> Reason | None:
    """Why a person must hear of ``inc``; None when incidentd handles it alone."""
    if inc.escalated:
        return Reason.ESCALATION
    if awaiting_approval:
        return Reason.APPROVAL
    if inc.top is not None and inc.top.recommended_action is ActionKind.NOTIFY:
        return Reason.NOTIFY
    return None


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def alert_for(inc: Incident, reason: Reason, external_url: str, now: float, ends_in: float) -> dict[str, Any]:
    """The postable alert for one incident (firing until ``now + ends_in``, or resolved at its resolve time)."""
    top = inc.top
    hyps = "; ".join(f"{i + 1}. {h.root_cause} ({h.domain.value}) {h.confidence:.2f} -> "
                     f"{h.recommended_action.value}" for i, h in enumerate(inc.hypotheses[:3]))
    link = f"{external_url.rstrip('/')}/incidents/{inc.id}"
    ends = inc.resolved_at if inc.resolved_at is not None else now + ends_in
    return {
        "labels": {"alertname": ALERTNAMES[reason], "model": inc.model, "incident": inc.id,
                   "root_cause": top.root_cause if top else "unexplained", "severity": inc.severity.value,
                   "reason": reason.value, "source": "incidentd"},
        "annotations": {"summary": inc.title, "hypotheses": hyps or "none yet (firing alerts no rule explains)",
                        "explanation": top.explanation if top else "", "incident_url": link},
        "startsAt": _iso(inc.opened_at),
        "endsAt": _iso(ends),
        "generatorURL": link,
    }


@dataclass
class Notifier:
    """Sends the alerts of incidents that need a person to Alertmanager (and optionally a webhook)."""

    alertmanager_urls: Sequence[str]
    external_url: str
    webhook_url: str | None = None
    ends_in: float = 60.0          # how far ahead a firing alert's endsAt is (a few detection cycles)
    timeout: float = 5.0

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout)
        self._firing: dict[str, Reason] = {}     # incident id -> the reason it was sent with
        self._failing: set[str] = set()          # URLs whose last post failed (logged once per outage)

    def sync(self, incidents: Iterable[Incident], awaiting_approval: set[str], now: float) -> list[dict[str, Any]]:
        """Send every incident that needs a person, and the resolution of those sent before. Returns the batch."""
        batch: list[dict[str, Any]] = []
        for inc in incidents:
            sent = self._firing.get(inc.id)
            if not inc.active:
                if sent is not None:
                    batch.append(alert_for(inc, sent, self.external_url, now, self.ends_in))
                    self._firing.pop(inc.id)
                continue
            reason = reason_for(inc, inc.id in awaiting_approval)
            if reason is None:
                continue
            if sent is not None and sent is not reason:   # the same incident under another alertname: end the old
                batch.append({**alert_for(inc, sent, self.external_url, now, self.ends_in), "endsAt": _iso(now)})
            batch.append(alert_for(inc, reason, self.external_url, now, self.ends_in))
            self._firing[inc.id] = reason
        if batch:
            for url in self.alertmanager_urls:
                self._post(url.rstrip("/") + "/api/v2/alerts", batch)
            if self.webhook_url:
                self._post(self.webhook_url, batch)
        return batch

    def _post(self, url: str, batch: list[dict[str, Any]]) -> None:
        try:
            r = self._client.post(url, json=batch)
            r.raise_for_status()
        except httpx.HTTPError as e:
            # The next cycle sends again (firing alerts are re-sent each cycle); logged once per outage.
            if url not in self._failing:
                log.error("could not send %d escalation alert(s) to %s: %s; retrying every cycle",
                          len(batch), url, e)
                self._failing.add(url)
            return
        if url in self._failing:
            log.warning("escalation alerts reach %s again", url)
            self._failing.discard(url)

    def close(self) -> None:
        self._client.close()
