"""The repository behaves the same on SQLite and PostgreSQL, and holds under concurrent writers."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from diagnosis import lifecycle
from diagnosis.types import Evidence, EvidenceKind, Incident, IncidentStatus, TimelineEntry, TimelineKind
from incidentd.errors import NotFound
from incidentd.storage import ConcurrentUpdate, DuplicateAction, Repository
from remediation.types import ActionKind, ActionMode, ActionRecord, ActionStatus

DAY = 86400.0


def open_one(repo: Repository, model: str = "m", now: float = 1000.0):
    inc, entries = lifecycle.open_incident(model, [], ["ev1"], now, ["x"], alerts=["HighLatency"])
    repo.save_incident(inc, entries)
    return inc


def _one(changed: tuple[Incident, TimelineEntry]) -> tuple[Incident, list[TimelineEntry]]:
    return changed[0], [changed[1]]


def action(inc, kind: ActionKind = ActionKind.RESTART, id: str = "act-1") -> ActionRecord:
    return ActionRecord(id=id, incident_id=inc.id, model=inc.model, kind=kind, mode=ActionMode.AUTO,
                        status=ActionStatus.EXECUTING, reason="r",
                        idempotency_key=f"{inc.id}:{kind.value}", created_at=1000.0)


def test_incidents_round_trip_with_their_timeline(repo: Repository) -> None:
    inc = open_one(repo)
    repo.append_timeline(inc.id, TimelineEntry(1001.0, TimelineKind.ACKNOWLEDGED, "hello", {"k": 1}))
    assert repo.incident(inc.id).to_dict() == inc.to_dict()
    active = repo.active_incident(inc.dedup_key)
    assert active is not None and active.id == inc.id
    assert [i.id for i in repo.incidents(status=IncidentStatus.OPEN, model="m")] == [inc.id]
    assert repo.incidents(model="other") == []
    assert [e.kind for e in repo.timeline(inc.id)][-1] is TimelineKind.ACKNOWLEDGED
    assert repo.models_with_active_incidents() == ["m"]
    with pytest.raises(NotFound):
        repo.incident("nope")


def test_a_save_over_a_newer_version_is_merged_not_lost(db_url: str) -> None:
    a, b = Repository(db_url), Repository(db_url)        # two replicas
    try:
        inc = open_one(a)
        mine, theirs = a.incident(inc.id), b.incident(inc.id)
        b.save_incident(*_one(lifecycle.acknowledge(theirs, 1010.0, "looking", "alice")))   # a person acks
        # ... while this replica's cycle saves what it found from its older copy: both are kept
        stored = a.save_incident(replace(mine, evidence_ids=(*mine.evidence_ids, "ev-new")))
        assert stored.status is IncidentStatus.ACKNOWLEDGED and "ev-new" in stored.evidence_ids
        seen = b.incident(inc.id)
        assert seen.status is IncidentStatus.ACKNOWLEDGED and "ev-new" in seen.evidence_ids
        assert a.incident_version(inc.id) == 3
        resolved = b.save_incident(*_one(lifecycle.resolve(seen, 1020.0, "fixed")))
        assert a.save_incident(replace(mine, title="late")).status is IncidentStatus.RESOLVED, \
            "a resolved incident stays resolved"
        assert resolved.status is IncidentStatus.RESOLVED
    finally:
        a.close()
        b.close()


def test_two_replicas_cannot_both_open_an_incident_for_one_model(db_url: str) -> None:
    a, b = Repository(db_url), Repository(db_url)
    try:
        first = open_one(a)
        with pytest.raises(ConcurrentUpdate):
            open_one(b)
        assert [i.id for i in a.incidents()] == [first.id]
        a.save_incident(*_one(lifecycle.resolve(first, 2000.0, "quiet")))
        open_one(b, now=3000.0)                            # after resolution a new one may open
        assert len(a.incidents()) == 2
    finally:
        a.close()
        b.close()


def test_an_action_is_recorded_once_per_idempotency_key(repo: Repository) -> None:
    inc = open_one(repo)
    rec = action(inc)
    repo.save_action(rec)
    repo.save_action(replace(rec, status=ActionStatus.VERIFIED))     # an update of the same record
    assert repo.action(rec.id).status is ActionStatus.VERIFIED
    with pytest.raises(DuplicateAction):
        repo.save_action(action(inc, id="act-2"))          # another record, the same key
    assert [a.id for a in repo.actions(incident_id=inc.id)] == ["act-1"]
    assert repo.actions(model="m", statuses=(ActionStatus.EXECUTING,)) == []
    assert repo.action(rec.id) == replace(rec, status=ActionStatus.VERIFIED)


def test_alert_notifications_are_stored_once(repo: Repository) -> None:
    ev = Evidence("al1", EvidenceKind.ALERT, "m", "HighLatency", 1000.0, "latency high")
    assert repo.record_notification("fp", "2026-01-01T00:00:00Z", "firing", ev) is True
    assert repo.record_notification("fp", "2026-01-01T00:00:00Z", "firing", ev) is False
    assert repo.notification_status("fp", "2026-01-01T00:00:00Z") == {"firing"}
    assert [a.id for a in repo.open_alerts("m")] == ["al1"]
    assert repo.models_with_open_alerts() == ["m"]
    repo.save_evidence(Evidence("al1", EvidenceKind.ALERT, "m", "HighLatency", 1000.0, "over", ended_at=1100.0))
    assert repo.open_alerts("m") == []
    assert [e.id for e in repo.recent_evidence("m", 900.0, kind="alert")] == ["al1"]


def test_key_values_round_trip(repo: Repository) -> None:
    assert repo.get("baselines:m", "missing") == "missing"
    repo.put("baselines:m", {"at": 1.0, "signals": {"latency": [1, 2]}})
    repo.put("baselines:m", {"at": 2.0})
    assert repo.get("baselines:m") == {"at": 2.0}


def test_retention_prunes_old_resolved_incidents_and_counts_the_rows(db_url: str) -> None:
    registry = CollectorRegistry()
    repo = Repository(db_url, registry=registry)
    try:
        repo.save_evidence(Evidence("ev1", EvidenceKind.ANOMALY, "old", "latency", 1000.0, "s", ended_at=1500.0))
        old = open_one(repo, "old", now=1000.0)
        repo.save_action(action(old))
        repo.save_incident(*_one(lifecycle.resolve(old, 2000.0, "quiet")))
        recent = open_one(repo, "recent", now=100 * DAY)
        repo.save_incident(*_one(lifecycle.resolve(recent, 100 * DAY, "quiet")))
        active = open_one(repo, "active", now=1000.0)
        old_entries = len(repo.timeline(old.id))
        report = repo.prune(now=100 * DAY, max_age_seconds=90 * DAY)
        assert (report.incidents, report.evidence, report.actions) == (1, 1, 1)
        assert report.timeline == old_entries > 0
        assert repo.timeline(old.id) == []
        assert {i.id for i in repo.incidents()} == {recent.id, active.id}
        assert repo.evidence(["ev1"]) == []
        assert registry.get_sample_value("incidentd_storage_pruned_rows_total", {"table": "incidents"}) == 1
        assert repo.prune(now=100 * DAY, max_age_seconds=90 * DAY).total == 0
    finally:
        repo.close()


def test_leases_give_each_model_one_owner_and_expire(repo: Repository) -> None:
    assert repo.claim("r1", ["a", "b"], now=100.0, ttl=15.0) == {"a", "b"}
    assert repo.claim("r2", ["a", "c"], now=101.0, ttl=15.0) == {"c"}      # a is r1's until it expires
    assert repo.claim("r1", ["a"], now=110.0, ttl=15.0) == {"a"}           # renewed
    assert repo.holds("r1", "a", 120.0) and not repo.holds("r2", "a", 120.0)
    assert repo.claim("r2", ["a"], now=126.0, ttl=15.0) == {"a"}           # r1 stopped renewing: taken over
    assert repo.lease_owners(126.0) == {"a": "r2"}                    # c was not renewed either
    repo.heartbeat("r1", 100.0)
    repo.heartbeat("r2", 126.0)
    assert repo.live_replicas(126.0, ttl=15.0) == ["r2"]
    repo.leave("r2")
    assert repo.lease_owners(126.0) == {}


def _alert_ev(fp: str) -> Evidence:
    return Evidence(f"alert-{fp}", EvidenceKind.ALERT, "m", "HighLatency", 1000.0, "latency high",
                    attributes={"fingerprint": fp})


def test_resolved_wins_over_firing_whatever_the_order_and_across_replicas(db_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from incidentd.storage import NotificationOutcome

    a, b = Repository(db_url), Repository(db_url)        # two replicas behind an Alertmanager HA pair
    try:
        assert a.apply_notification("late", "t0", "resolved", _alert_ev("late"), 1100.0, 1100.0) \
            is NotificationOutcome.ACCEPTED
        assert b.apply_notification("late", "t0", "firing", _alert_ev("late"), None, 1101.0) \
            is NotificationOutcome.STALE
        assert b.apply_notification("late", "t0", "firing", _alert_ev("late"), None, 1102.0) \
            is NotificationOutcome.DUPLICATE
        pairs = [f"fp{i}" for i in range(20)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for fp in pairs:
                list(pool.map(lambda job, fp=fp: job[0].apply_notification(fp, "t0", job[1], _alert_ev(fp), 1100.0,
                                                                           1100.0),
                              [(a, "firing"), (b, "resolved")]))
        assert a.open_alerts("m") == [], "no episode is left firing"
        assert [e.ended_at for e in b.evidence([f"alert-{fp}" for fp in pairs])] == [1100.0] * len(pairs)
    finally:
        a.close()
        b.close()


def test_a_delivery_applied_at_once_ends_as_if_applied_one_by_one(db_url: str, tmp_path: Path) -> None:
    """Random deliveries (repeats, both orders, resolved before firing, one episode several times in one
    delivery): the batched write gives each notification the outcome, and the store the evidence, that
    applying them one at a time gives."""
    import random

    rng = random.Random(7)
    episodes = [(f"fp{i}", f"t{i % 3}") for i in range(25)]
    deliveries = []
    for _ in range(12):
        items = []
        for _ in range(rng.randint(1, 60)):
            fp, sa = rng.choice(episodes)
            status = rng.choice(["firing", "resolved"])
            ended = rng.choice([None, 1500.0]) if status == "resolved" else None
            items.append((fp, sa, status, replace(_alert_ev(fp), id=f"alert-{fp}-{sa}"), ended))
        deliveries.append(items)
    batched = Repository(db_url)
    one_by_one = Repository(str(tmp_path / "one-by-one.db"))
    try:
        for n, items in enumerate(deliveries):
            got = batched.apply_notifications(items, received_at=2000.0 + n)
            want = [one_by_one.apply_notifications([item], received_at=2000.0 + n)[0] for item in items]
            assert got == want, n
        ids = sorted({f"alert-{fp}-{sa}" for fp, sa in episodes})
        def docs(repo: Repository) -> list[dict]:
            return sorted((e.to_dict() for e in repo.evidence(ids)), key=lambda d: d["id"])

        assert docs(batched) == docs(one_by_one) and len(docs(batched)) > 10
    finally:
        batched.close()
        one_by_one.close()
