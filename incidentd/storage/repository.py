"""The repository: durable state of the service on SQLite (embedded default) or PostgreSQL (replicas).

Same public methods as the SQLite-only store it replaces, so callers do not change. Every method is one
transaction that commits before it returns (a 2xx means the data is durable).

Concurrency: an incident row carries a version; a save reads the row in its transaction, merges a writer
that worked from an older copy with it (``lifecycle.merge_concurrent``: an ack or resolve made meanwhile
stays) and updates only at the version read (optimistic concurrency), reading again if it moved. At most one unresolved incident per dedup key (partial UNIQUE index) and one action per
idempotency key (UNIQUE) hold across any number of replicas.

    >>> repo = Repository(":memory:")
    >>> repo.put("k", {"a": 1}); repo.get("k")
    {'a': 1}
"""
from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from diagnosis import lifecycle
from diagnosis.types import Evidence, Incident, IncidentStatus, TimelineEntry, TimelineKind
from incidentd.errors import Conflict, NotFound, StorageError
from incidentd.storage import migrate, tables
from incidentd.storage.tables import (
    actions,
    alert_notifications,
    api_keys,
    evidence,
    incidents,
    kv,
    metadata,
    model_leases,
    replicas,
    timeline,
)
from remediation.types import ActionRecord, ActionStatus

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 90 * 24 * 3600.0
_TRACKED = 4096          # incident objects whose read version is remembered
_CHUNK = 500


class ConcurrentUpdate(Conflict):
    """Someone else changed the row since it was read (another replica, the API): re-read and re-apply."""


class DuplicateAction(Conflict):
    """An action with this idempotency key is already recorded: it must not run again."""


class NotificationOutcome(enum.StrEnum):
    """What ``apply_notification`` did with one alert notification."""

    ACCEPTED = "accepted"     # stored; the evidence reflects it
    DUPLICATE = "duplicate"   # this (fingerprint, startsAt, status) was applied already
    STALE = "stale"           # a firing notification for an episode already resolved: recorded, ignored


# A locked database fails fast: a short busy wait (held under the repository's lock) instead of a long one,
# so queued requests answer 503 with Retry-After at once and the sender retries (issue 11).
BUSY_TIMEOUT_SECONDS = 0.25


def fault_kind(e: BaseException) -> str:
    """The storage fault behind a database error, in words an operator acts on."""
    msg = str(getattr(e, "orig", None) or e).lower()
    if "full" in msg:
        return "disk full"
    if "locked" in msg or "busy" in msg:
        return "database locked"
    if "i/o" in msg or "readonly" in msg or "read-only" in msg or "unable to open" in msg:
        return "I/O error"
    if "connection" in msg or "could not connect" in msg or "server closed" in msg:
        return "database unreachable"
    return "database error"


class SchemaOutdated(StorageError):
    """The database is not at the schema revision this code needs; run ``incidentd db upgrade``."""


@dataclass(frozen=True, slots=True)
class PruneReport:
    """Rows removed by one ``prune``, by table."""

    incidents: int = 0
    timeline: int = 0
    evidence: int = 0
    actions: int = 0
    notifications: int = 0

    @property
    def total(self) -> int:
        return self.incidents + self.timeline + self.evidence + self.actions + self.notifications


def database_url(target: Path | str) -> str:
    """A SQLAlchemy URL: URLs pass through (``postgresql+psycopg://…``), a path becomes a SQLite file."""
    s = str(target)
    if "://" in s:
        if s.startswith(("postgresql://", "postgres://")):
            s = "postgresql+psycopg://" + s.split("://", 1)[1]     # psycopg 3, not the psycopg2 default
        return s
    if s == ":memory:":
        return "sqlite://"
    return "sqlite:///" + str(Path(s).resolve())


def make_engine(url: str, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Engine:
    if url.startswith("sqlite"):
        # One connection, serialised by the repository's lock: SQLite has one writer anyway.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False,
                                                                          "timeout": busy_timeout})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if url != "sqlite://":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _dump(value: Any) -> str:
    return json.dumps(value, default=str)


class Repository:
    """Durable state of the service (incidents, timeline, evidence, actions, alert dedup, kv, leases).

        >>> repo = Repository(":memory:")
        >>> repo.incidents()
        []

    ``target`` is a SQLite path or a database URL (``postgresql+psycopg://user@host/db``). ``migrate``:
    bring the schema to the newest revision on open; by default yes for SQLite (embedded, nothing to
    administer) and no for PostgreSQL, where ``incidentd db upgrade`` (or the ``database_migrate``
    setting) does it and an outdated schema is a ``SchemaOutdated`` error at start.
    """

    def __init__(self, target: Path | str, *, migrate_schema: bool | None = None,
                 registry: CollectorRegistry | None = None, busy_timeout: float = BUSY_TIMEOUT_SECONDS):
        self.url = database_url(target)
        self.path = str(target)
        self.is_sqlite = self.url.startswith("sqlite")
        self._insert = sqlite.insert if self.is_sqlite else postgresql.insert
        self._lock: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        # incident id -> row version last read or written here (incidents are frozen values: a change is a
        # new object, so the version follows the incident's id, not the object)
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._vlock = threading.Lock()
        self._fault: str | None = None   # the storage fault logged last (logged once until writes succeed)
        if self.is_sqlite and self.url != "sqlite://":
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = make_engine(self.url, busy_timeout)
            if migrate_schema if migrate_schema is not None else self.is_sqlite:
                migrate.upgrade(self.engine)
            self._check_schema()
        except SQLAlchemyError as e:
            raise StorageError(f"cannot open the database {self._safe_url()}: {e.__class__.__name__}: "
                               f"{str(e).splitlines()[0]}") from e
        self.pruned = Counter("incidentd_storage_pruned_rows_total",
                              "Rows removed by retention (resolved incidents and their evidence), by table.",
                              ["table"], registry=registry if registry is not None else CollectorRegistry())

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else self.url

    def _check_schema(self) -> None:
        with self.engine.connect() as conn:
            at, want = migrate.current(conn), migrate.head()
        if at != want:
            raise SchemaOutdated(f"database {self._safe_url()} is at schema revision {at or 'none'}, this "
                                 f"incidentd needs {want}: run `incidentd db upgrade` (or set database_migrate)")

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ plumbing

    def _failed(self, what: str, e: BaseException) -> StorageError:
        """The StorageError for ``e`` (the API answers it 503 + Retry-After); the fault is logged once, with
        its cause, until a write succeeds again (issue 11)."""
        kind = fault_kind(e)
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        # A generic error during a known fault is its consequence (a dead disk's reads then find the file
        # "malformed"): still the same fault for the log.
        if self._fault != kind and not (self._fault is not None and kind == "database error"):
            log.error("storage fault (%s) on %s: %s; writes answer 503 until it clears", kind, self._safe_url(),
                      first)
            self._fault = kind
        return StorageError(f"{what} ({kind}): {e.__class__.__name__}: {first}")

    def _recovered(self) -> None:
        if self._fault is not None:
            log.warning("storage recovered (%s cleared) on %s", self._fault, self._safe_url())
            self._fault = None

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One transaction; IntegrityError passes through for the caller, other failures are StorageError.

        A failed COMMIT (disk full, I/O error) may leave the ROLLBACK failing too; either is the same fault."""
        if self._lock is not None:
            self._lock.acquire()
        try:
            with self.engine.begin() as conn:
                yield conn
            self._recovered()
        except IntegrityError:
            raise
        except (DBAPIError, SQLAlchemyError) as e:
            raise self._failed("database write failed", e) from e
        finally:
            if self._lock is not None:
                self._lock.release()

    def _rows(self, stmt: Any) -> Sequence[Any]:
        if self._lock is not None:
            self._lock.acquire()
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).all()
        except (DBAPIError, SQLAlchemyError) as e:
            raise self._failed("database read failed", e) from e
        finally:
            if self._lock is not None:
                self._lock.release()

    def _upsert(self, conn: Connection, table: Any, values: dict[str, Any], keys: list[str]) -> None:
        stmt = self._insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=keys,
                                          set_={k: v for k, v in values.items() if k not in keys})
        conn.execute(stmt)

    # ------------------------------------------------------------ incident versions (optimistic concurrency)

    def _track(self, inc: Incident, version: int) -> None:
        with self._vlock:
            self._versions[inc.id] = version
            self._versions.move_to_end(inc.id)
            while len(self._versions) > _TRACKED:
                self._versions.popitem(last=False)

    def _version_of(self, inc: Incident) -> int | None:
        with self._vlock:
            return self._versions.get(inc.id)

    def _incident(self, doc: str, version: int) -> Incident:
        inc = Incident.from_dict(json.loads(doc))
        self._track(inc, version)
        return inc

    # ------------------------------------------------------------ incidents

    def save_incident(self, inc: Incident, timeline: Sequence[TimelineEntry] | None = None) -> Incident:
        """Write ``inc`` and its new timeline entries in one transaction; returns what was stored.

        Writers do not race (issue 11): the row is read back inside the transaction, and a writer working
        from an older copy (a detection cycle while a person acknowledged or resolved, another replica) is
        merged with it by :func:`diagnosis.lifecycle.merge_concurrent` instead of overwriting it. The update
        is conditional on the row version read; ``ConcurrentUpdate`` only when it keeps changing under us, or
        when a second unresolved incident would take the same dedup key.
        """
        for _attempt in range(5):
            try:
                with self._tx() as conn:
                    row = conn.execute(select(incidents.c.doc, incidents.c.row_version)
                                       .where(incidents.c.id == inc.id).with_for_update()).first()
                    out = inc
                    if row is None:
                        conn.execute(incidents.insert().values(id=inc.id, row_version=1, **_incident_values(inc)))
                        new = 1
                    else:
                        stored_version = int(row[1])
                        out = lifecycle.merge_concurrent(Incident.from_dict(json.loads(row[0])), inc)
                        res = conn.execute(update(incidents)
                                           .where(incidents.c.id == inc.id,
                                                  incidents.c.row_version == stored_version)
                                           .values(row_version=stored_version + 1, **_incident_values(out)))
                        if res.rowcount != 1:
                            raise _Retry
                        new = stored_version + 1
                    for entry in timeline or ():
                        self._append(conn, inc.id, entry)
            except _Retry:
                continue
            except IntegrityError as e:
                raise ConcurrentUpdate(f"incident {inc.id} ({inc.dedup_key}) already exists or another active "
                                       f"incident has the same key") from e
            self._track(out, new)
            return out
        raise ConcurrentUpdate(f"incident {inc.id} kept changing while it was saved; re-read it")

    def incident_version(self, incident_id: str) -> int:
        """How many times the incident was written (its row version)."""
        rows = self._rows(select(incidents.c.row_version).where(incidents.c.id == incident_id))
        if not rows:
            raise NotFound(f"no incident {incident_id!r}")
        return int(rows[0][0])

    def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        for attempt in range(3):     # two writers may pick the same next seq; the loser tries again
            try:
                with self._tx() as conn:
                    self._append(conn, incident_id, entry)
                return
            except IntegrityError as e:
                if attempt == 2:
                    raise StorageError(f"could not append to the timeline of {incident_id}: {e.orig}") from e

    @staticmethod
    def _append(conn: Connection, incident_id: str, entry: TimelineEntry) -> None:
        seq = conn.execute(select(func.coalesce(func.max(timeline.c.seq), 0) + 1)
                           .where(timeline.c.incident_id == incident_id)).scalar_one()
        conn.execute(timeline.insert().values(incident_id=incident_id, seq=seq, at=entry.at, kind=entry.kind.value,
                                              message=entry.message, data=_dump(entry.data)))

    def incident(self, incident_id: str) -> Incident:
        rows = self._rows(select(incidents.c.doc, incidents.c.row_version).where(incidents.c.id == incident_id))
        if not rows:
            raise NotFound(f"no incident {incident_id!r}")
        return self._incident(rows[0][0], rows[0][1])

    def incidents(self, status: IncidentStatus | None = None, model: str | None = None,
                  limit: int = 100) -> list[Incident]:
        q = select(incidents.c.doc, incidents.c.row_version)
        if status is not None:
            q = q.where(incidents.c.status == status.value)
        if model is not None:
            q = q.where(incidents.c.model == model)
        q = q.order_by(incidents.c.opened_at.desc()).limit(limit)
        return [self._incident(d, v) for d, v in self._rows(q)]

    def active_incident(self, dedup_key: str) -> Incident | None:
        rows = self._rows(select(incidents.c.doc, incidents.c.row_version)
                          .where(incidents.c.dedup_key == dedup_key,
                                 incidents.c.status != IncidentStatus.RESOLVED.value)
                          .order_by(incidents.c.opened_at.desc()).limit(1))
        return self._incident(rows[0][0], rows[0][1]) if rows else None

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        rows = self._rows(select(timeline.c.at, timeline.c.kind, timeline.c.message, timeline.c.data)
                          .where(timeline.c.incident_id == incident_id).order_by(timeline.c.seq))
        return [TimelineEntry(at, TimelineKind(kind), msg, json.loads(data)) for at, kind, msg, data in rows]

    # ------------------------------------------------------------ evidence

    def _evidence_values(self, ev: Evidence) -> dict[str, Any]:
        return {"id": ev.id, "model": ev.model, "kind": ev.kind.value, "name": ev.name, "at": ev.at,
                "ended_at": ev.ended_at, "doc": _dump(ev.to_dict())}

    def save_evidence(self, ev: Evidence) -> None:
        with self._tx() as conn:
            self._upsert(conn, evidence, self._evidence_values(ev), ["id"])

    def evidence(self, ids: Sequence[str]) -> list[Evidence]:
        if not ids:
            return []
        out: list[Evidence] = []
        for i in range(0, len(ids), _CHUNK):
            rows = self._rows(select(evidence.c.doc, evidence.c.at).where(evidence.c.id.in_(list(ids[i:i + _CHUNK]))))
            out.extend(Evidence.from_dict(json.loads(r[0])) for r in rows)
        return sorted(out, key=lambda e: e.at)

    def recent_evidence(self, model: str, since: float, kind: str | None = None) -> list[Evidence]:
        q = select(evidence.c.doc).where(evidence.c.model == model, evidence.c.at >= since)
        if kind:
            q = q.where(evidence.c.kind == kind)
        return [Evidence.from_dict(json.loads(r[0])) for r in self._rows(q.order_by(evidence.c.at))]

    def open_alerts(self, model: str) -> list[Evidence]:
        """Every alert of the model that is still firing, however long ago it started."""
        rows = self._rows(select(evidence.c.doc)
                          .where(evidence.c.model == model, evidence.c.kind == "alert",
                                 evidence.c.ended_at.is_(None)).order_by(evidence.c.at))
        return [Evidence.from_dict(json.loads(r[0])) for r in rows]

    def models_with_active_incidents(self) -> list[str]:
        rows = self._rows(select(incidents.c.model).distinct()
                          .where(incidents.c.status != IncidentStatus.RESOLVED.value))
        return [r[0] for r in rows]

    def models_with_open_alerts(self) -> list[str]:
        rows = self._rows(select(evidence.c.model).distinct()
                          .where(evidence.c.kind == "alert", evidence.c.ended_at.is_(None)))
        return [r[0] for r in rows]

    # ------------------------------------------------------------ actions

    def save_action(self, rec: ActionRecord) -> None:
        """Insert or update an action record; ``DuplicateAction`` when another record already holds its
        idempotency key."""
        doc = rec.to_dict()
        values = {"incident_id": rec.incident_id, "model": rec.model, "kind": rec.kind.value,
                  "status": rec.status.value, "idempotency_key": rec.idempotency_key or rec.id,
                  "created_at": rec.created_at, "doc": _dump(doc)}
        try:
            with self._tx() as conn:
                res = conn.execute(update(actions).where(actions.c.id == rec.id).values(**values))
                if res.rowcount == 0:
                    conn.execute(actions.insert().values(id=rec.id, **values))
        except IntegrityError as e:
            raise DuplicateAction(f"an action with idempotency key {values['idempotency_key']!r} is already "
                                  f"recorded") from e

    def action(self, action_id: str) -> ActionRecord:
        rows = self._rows(select(actions.c.doc).where(actions.c.id == action_id))
        if not rows:
            raise NotFound(f"no action {action_id!r}")
        return ActionRecord.from_dict(json.loads(rows[0][0]))

    def actions(self, incident_id: str | None = None, model: str | None = None,
                statuses: tuple[ActionStatus, ...] = ()) -> list[ActionRecord]:
        q = select(actions.c.doc)
        if incident_id:
            q = q.where(actions.c.incident_id == incident_id)
        if model:
            q = q.where(actions.c.model == model)
        if statuses:
            q = q.where(actions.c.status.in_([s.value for s in statuses]))
        return [ActionRecord.from_dict(json.loads(r[0])) for r in self._rows(q.order_by(actions.c.created_at))]

    # ------------------------------------------------------------ alert notifications (webhook dedup)

    def record_notification(self, fingerprint: str, starts_at: str, status: str,
                            evidence: Evidence | None, received_at: float | None = None) -> bool:
        """Store one alert notification; False when (fingerprint, startsAt, status) was seen already."""
        try:
            with self._tx() as conn:
                seen = conn.execute(select(alert_notifications.c.fingerprint).where(
                    alert_notifications.c.fingerprint == fingerprint, alert_notifications.c.starts_at == starts_at,
                    alert_notifications.c.status == status)).first()
                if seen:
                    return False
                conn.execute(alert_notifications.insert().values(
                    fingerprint=fingerprint, starts_at=starts_at, status=status,
                    received_at=time.time() if received_at is None else received_at,
                    evidence_id=evidence.id if evidence else None))
                if evidence is not None:
                    self._upsert(conn, tables.evidence, self._evidence_values(evidence), ["id"])
                return True
        except IntegrityError:
            return False        # another replica stored the same notification a moment ago

    def apply_notification(self, fingerprint: str, starts_at: str, status: str, firing: Evidence,
                           ended_at: float | None, received_at: float) -> NotificationOutcome:
        """Apply one alert notification in one transaction (issue 11: no check-then-write race).

        The order on (startsAt, endsAt, status): for one episode (fingerprint, startsAt), resolved wins over
        firing whatever the arrival order. A firing notification never reopens a resolved episode (it is
        recorded as stale); a resolved one ends the episode's evidence, keeping what firing stored. Each
        (fingerprint, startsAt, status) is applied once; a repeat is a duplicate.
        """
        return self.apply_notifications([(fingerprint, starts_at, status, firing, ended_at)], received_at)[0]

    def apply_notifications(self, items: Sequence[tuple[str, str, str, Evidence, float | None]],
                            received_at: float | None = None) -> list[NotificationOutcome]:
        """``apply_notification`` for a whole delivery in one transaction (one fsync per delivery).

        Items are (fingerprint, startsAt, status, evidence as firing would store it, endsAt or None)."""
        now = time.time() if received_at is None else received_at
        try:
            with self._tx() as conn:
                return self._apply(conn, items, now)
        except IntegrityError:
            # another replica applied one of them a moment ago: apply one by one, that one is a duplicate
            if len(items) == 1:
                return [NotificationOutcome.DUPLICATE]
            return [self.apply_notification(*item, now) for item in items]

    def _apply(self, conn: Connection, items: Sequence[tuple[str, str, str, Evidence, float | None]],
               now: float) -> list[NotificationOutcome]:
        """The delivery's notifications in a handful of statements (not three per alert: a 1,000-alert
        delivery took 0.8-1.2 s that way, nearly all of it in building statements), with the outcome each
        would have had applied one after the other."""
        keys = sorted({(fp, sa) for fp, sa, *_ in items})
        if not self.is_sqlite:   # one episode at a time across replicas; sorted, so two deliveries never deadlock
            for fp, sa in keys:
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"{fp}|{sa}"})
        # Write first, then read: the write takes the database's write lock (SQLite: another process on the
        # same file waits), so the statuses read below cannot change before this transaction commits.
        an = alert_notifications.c
        insert_new = self._insert(alert_notifications).on_conflict_do_nothing().returning(
            an.fingerprint, an.starts_at, an.status)
        rows = [{"fingerprint": fp, "starts_at": sa, "status": st, "received_at": now, "evidence_id": ev.id}
                for fp, sa, st, ev, _ in items]
        inserted: set[tuple[str, str, str]] = set()
        for i in range(0, len(rows), _CHUNK):
            inserted.update((r[0], r[1], r[2]) for r in conn.execute(insert_new, rows[i:i + _CHUNK]))
        seen: dict[tuple[str, str], set[str]] = {k: set() for k in keys}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            for fp, sa, st in conn.execute(select(an.fingerprint, an.starts_at, an.status).where(
                    tuple_(an.fingerprint, an.starts_at).in_(chunk))):
                if (fp, sa, st) not in inserted:      # what was there before this delivery
                    seen[(fp, sa)].add(st)
        resolved_ids = sorted({ev.id for _, _, st, ev, _ in items if st == "resolved"})
        prior: dict[str, Evidence] = {}
        for i in range(0, len(resolved_ids), _CHUNK):
            for eid, doc in conn.execute(select(evidence.c.id, evidence.c.doc).where(
                    evidence.c.id.in_(resolved_ids[i:i + _CHUNK]))):
                prior[eid] = Evidence.from_dict(json.loads(doc))
        out: list[NotificationOutcome] = []
        written: dict[str, Evidence] = {}
        claimed: set[tuple[str, str, str]] = set()
        for fp, sa, st, firing, ended_at in items:
            if (fp, sa, st) not in inserted or (fp, sa, st) in claimed:
                out.append(NotificationOutcome.DUPLICATE)
                continue
            claimed.add((fp, sa, st))
            seen[(fp, sa)].add(st)
            if st == "firing" and "resolved" in seen[(fp, sa)]:
                out.append(NotificationOutcome.STALE)
                continue
            ev = firing
            if st == "resolved":
                base = written.get(firing.id) or prior.get(firing.id) or firing
                ev = replace(base, ended_at=ended_at if ended_at is not None else now)
            written[firing.id] = ev
            out.append(NotificationOutcome.ACCEPTED)
        values = [self._evidence_values(ev) for ev in written.values()]
        if values:
            ins = self._insert(evidence)
            upsert = ins.on_conflict_do_update(index_elements=["id"],
                                               set_={c: ins.excluded[c] for c in values[0] if c != "id"})
            for i in range(0, len(values), _CHUNK):
                conn.execute(upsert, values[i:i + _CHUNK])
        return out

    def notification_status(self, fingerprint: str, starts_at: str) -> set[str]:
        rows = self._rows(select(alert_notifications.c.status).where(
            alert_notifications.c.fingerprint == fingerprint, alert_notifications.c.starts_at == starts_at))
        return {r[0] for r in rows}

    # ------------------------------------------------------------ small key/value state (checkpoints)

    def put(self, key: str, value: Any) -> None:
        with self._tx() as conn:
            self._upsert(conn, kv, {"key": key, "value": _dump(value)}, ["key"])

    def get(self, key: str, default: Any = None) -> Any:
        rows = self._rows(select(kv.c.value).where(kv.c.key == key))
        return json.loads(rows[0][0]) if rows else default

    def record_notifications(self, items: Sequence[tuple[str, str, str, Evidence | None]]) -> list[bool]:
        """``record_notification`` for a whole delivery in one transaction; True where it was new."""
        out: list[bool] = []
        now = time.time()
        with self._tx() as conn:
            for fingerprint, starts_at, status, ev in items:
                stmt = self._insert(alert_notifications).values(
                    fingerprint=fingerprint, starts_at=starts_at, status=status, received_at=now,
                    evidence_id=ev.id if ev else None).on_conflict_do_nothing().returning(
                    alert_notifications.c.fingerprint)
                # a row comes back only when it was inserted (rowcount is not reliable here on PostgreSQL)
                new = conn.execute(stmt).first() is not None
                out.append(new)
                if new and ev is not None:
                    self._upsert(conn, tables.evidence, self._evidence_values(ev), ["id"])
        return out

    # ------------------------------------------------------------ API keys (hashed; see incidentd/auth/keys.py)

    def add_key(self, key_id: str, name: str, scopes: list[str], salt: bytes, digest: bytes, at: float) -> None:
        """Store a new key's hash; a second active key of the same name is a Conflict."""
        try:
            with self._tx() as conn:
                if conn.execute(select(api_keys.c.id).where(api_keys.c.name == name,
                                                            api_keys.c.revoked_at.is_(None))).first():
                    raise Conflict(f"an active key named {name!r} exists; revoke it first or pick another name")
                conn.execute(api_keys.insert().values(id=key_id, name=name, scopes=",".join(scopes), salt=salt,
                                                      hash=digest, created_at=at, revoked_at=None))
        except IntegrityError as e:    # the same name created at once elsewhere
            raise Conflict(f"an active key named {name!r} exists; revoke it first or pick another name") from e

    def key(self, key_id: str) -> dict[str, Any] | None:
        rows = self._rows(select(*_KEY_COLUMNS).where(api_keys.c.id == key_id))
        return _key_row(rows[0]) if rows else None

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        stmt = select(*_KEY_COLUMNS)
        if not include_revoked:
            stmt = stmt.where(api_keys.c.revoked_at.is_(None))
        return [_key_row(r) for r in self._rows(stmt.order_by(api_keys.c.created_at))]

    def revoke_key(self, name_or_id: str, at: float) -> int:
        """Revoke the active key with this name or id; returns how many were revoked (0 or 1)."""
        with self._tx() as conn:
            res = conn.execute(update(api_keys).where(
                or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id),
                api_keys.c.revoked_at.is_(None)).values(revoked_at=at))
            return int(res.rowcount)

    def active_key_count(self) -> int:
        return int(self._rows(select(func.count()).select_from(api_keys).where(
            api_keys.c.revoked_at.is_(None)))[0][0])

    # ------------------------------------------------------------ retention

    def prune(self, now: float, max_age_seconds: float = DEFAULT_RETENTION_SECONDS) -> PruneReport:
        """Remove incidents resolved more than ``max_age_seconds`` before ``now``, with their timeline,
        evidence and actions, and alert notifications received before then. Counted in
        ``incidentd_storage_pruned_rows_total``."""
        horizon = now - max_age_seconds
        old = self._rows(select(incidents.c.id, incidents.c.doc).where(
            incidents.c.status == IncidentStatus.RESOLVED.value,
            func.coalesce(incidents.c.resolved_at, incidents.c.updated_at) < horizon))
        ids = [r[0] for r in old]
        ev_ids = sorted({e for r in old for e in json.loads(r[1]).get("evidence_ids", [])})
        n = {"incidents": 0, "timeline": 0, "evidence": 0, "actions": 0, "notifications": 0}
        with self._tx() as conn:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                n["timeline"] += conn.execute(delete(timeline).where(timeline.c.incident_id.in_(chunk))).rowcount
                n["actions"] += conn.execute(delete(actions).where(actions.c.incident_id.in_(chunk))).rowcount
                n["incidents"] += conn.execute(delete(incidents).where(
                    incidents.c.id.in_(chunk), incidents.c.status == IncidentStatus.RESOLVED.value)).rowcount
            for i in range(0, len(ev_ids), _CHUNK):
                # Only evidence that is itself old and over: a firing alert is kept whatever cited it.
                n["evidence"] += conn.execute(delete(evidence).where(
                    evidence.c.id.in_(ev_ids[i:i + _CHUNK]), evidence.c.at < horizon,
                    evidence.c.ended_at.is_not(None) | (evidence.c.kind != "alert"))).rowcount
            n["notifications"] += conn.execute(delete(alert_notifications).where(
                alert_notifications.c.received_at < horizon)).rowcount
        for table, count in n.items():
            if count:
                self.pruned.labels(table).inc(count)
        return PruneReport(**n)

    # ------------------------------------------------------------ replicas and model leases

    def heartbeat(self, replica: str, now: float) -> None:
        with self._tx() as conn:
            stmt = self._insert(replicas).values(id=replica, heartbeat_at=now, started_at=now)
            conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"heartbeat_at": now}))

    def live_replicas(self, now: float, ttl: float) -> list[str]:
        rows = self._rows(select(replicas.c.id).where(replicas.c.heartbeat_at >= now - ttl).order_by(replicas.c.id))
        return [r[0] for r in rows]

    def leave(self, replica: str) -> None:
        """A replica stopping cleanly: its leases and heartbeat go at once, so others take over next cycle."""
        with self._tx() as conn:
            conn.execute(delete(model_leases).where(model_leases.c.owner == replica))
            conn.execute(delete(replicas).where(replicas.c.id == replica))

    def claim(self, replica: str, models: Sequence[str], now: float, ttl: float) -> set[str]:
        """Take or renew the lease of each model that is free, expired or already ours; returns ours."""
        if not models:
            return set()
        with self._tx() as conn:
            for model in models:
                stmt = self._insert(model_leases).values(model=model, owner=replica, expires_at=now + ttl, epoch=1)
                taken = stmt.excluded
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["model"],
                    set_={"owner": taken.owner, "expires_at": taken.expires_at,
                          "epoch": model_leases.c.epoch + (model_leases.c.owner != taken.owner).cast(
                              model_leases.c.epoch.type)},
                    where=or_(model_leases.c.owner == taken.owner, model_leases.c.expires_at < now)))
        return self.owned(replica, now, models)

    def owned(self, replica: str, now: float, models: Sequence[str] | None = None) -> set[str]:
        q = select(model_leases.c.model).where(model_leases.c.owner == replica, model_leases.c.expires_at >= now)
        if models is not None:
            q = q.where(model_leases.c.model.in_(list(models)))
        return {r[0] for r in self._rows(q)}

    def holds(self, replica: str, model: str, now: float) -> bool:
        """Whether ``replica`` holds an unexpired lease on ``model`` (checked right before an action runs)."""
        rows = self._rows(select(model_leases.c.model).where(
            and_(model_leases.c.model == model, model_leases.c.owner == replica, model_leases.c.expires_at >= now)))
        return bool(rows)

    def release(self, replica: str, models: Sequence[str]) -> None:
        if not models:
            return
        with self._tx() as conn:
            conn.execute(delete(model_leases).where(model_leases.c.owner == replica,
                                                    model_leases.c.model.in_(list(models))))

    def claim_action(self, action_id: str, replica: str) -> bool:
        """Atomically make ``replica`` the one that runs the action; False if any replica already is."""
        with self._tx() as conn:
            res = conn.execute(update(actions).where(actions.c.id == action_id, actions.c.claimed_by.is_(None))
                               .values(claimed_by=replica))
            return res.rowcount == 1

    def action_claims(self, models: Sequence[str], status: str) -> list[tuple[str, str, str | None]]:
        """(action id, model, claimed_by) of the models' actions in ``status``."""
        if not models:
            return []
        rows = self._rows(select(actions.c.id, actions.c.model, actions.c.claimed_by).where(
            actions.c.model.in_(list(models)), actions.c.status == status).order_by(actions.c.created_at))
        return [(r[0], r[1], r[2]) for r in rows]

    def lease_owners(self, now: float) -> dict[str, str]:
        rows = self._rows(select(model_leases.c.model, model_leases.c.owner).where(model_leases.c.expires_at >= now))
        return {m: o for m, o in rows}


__all__ = ["BUSY_TIMEOUT_SECONDS", "ConcurrentUpdate", "DuplicateAction", "NotificationOutcome", "PruneReport",
           "Repository", "SchemaOutdated", "database_url", "fault_kind", "metadata"]


_KEY_COLUMNS = (api_keys.c.id, api_keys.c.name, api_keys.c.scopes, api_keys.c.salt, api_keys.c.hash,
                api_keys.c.created_at, api_keys.c.revoked_at)


class _Retry(Exception):
    """The incident row changed between read and conditional update: read it again."""


def _incident_values(inc: Incident) -> dict[str, Any]:
    return {"model": inc.model, "dedup_key": inc.dedup_key, "status": inc.status.value,
            "opened_at": inc.opened_at, "updated_at": inc.updated_at, "resolved_at": inc.resolved_at,
            "doc": _dump(inc.to_dict())}


def _key_row(r: Any) -> dict[str, Any]:
    return {"id": r[0], "name": r[1], "scopes": [s for s in r[2].split(",") if s], "salt": bytes(r[3]),
            "hash": bytes(r[4]), "created_at": r[5], "revoked_at": r[6]}
