"""SQLite storage for incidents, their timelines, evidence, actions and received alerts.

One file, WAL mode, one connection guarded by a lock (the service runs a few threads, not many
processes). Every write is a transaction that commits before the caller answers anyone, so a 2xx
means the data is on disk.
"""
from __future__ import annotations

import enum
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from diagnosis import lifecycle
from diagnosis.types import Evidence, Incident, IncidentStatus, TimelineEntry, TimelineKind
from incidentd.errors import NotFound, StorageError
from remediation.types import ActionRecord, ActionStatus

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
  id TEXT PRIMARY KEY, model TEXT NOT NULL, dedup_key TEXT NOT NULL, status TEXT NOT NULL,
  opened_at REAL NOT NULL, updated_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_by_key ON incidents(dedup_key, status);
CREATE TABLE IF NOT EXISTS timeline (
  incident_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
  message TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (incident_id, seq));
CREATE TABLE IF NOT EXISTS evidence (
  id TEXT PRIMARY KEY, model TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, at REAL NOT NULL,
  doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS evidence_by_model ON evidence(model, at);
CREATE TABLE IF NOT EXISTS actions (
  id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, created_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS actions_by_incident ON actions(incident_id);
CREATE TABLE IF NOT EXISTS alert_notifications (
  fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, status TEXT NOT NULL, received_at REAL NOT NULL,
  evidence_id TEXT, PRIMARY KEY (fingerprint, starts_at, status));
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# ---- issue 11 (writers that cannot race): row version on incidents, unique action idempotency key.
# Columns added to databases created before them; the unique index is partial so rows written before
# the column existed (NULL) do not collide.
MIGRATIONS = (
    ("incidents", "version", "ALTER TABLE incidents ADD COLUMN version INTEGER NOT NULL DEFAULT 1"),
    ("actions", "idempotency_key", "ALTER TABLE actions ADD COLUMN idempotency_key TEXT"),
)
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS actions_by_idempotency_key ON actions(idempotency_key)
  WHERE idempotency_key IS NOT NULL;
"""


class NotificationOutcome(enum.StrEnum):
    ACCEPTED = "accepted"     # stored; the evidence reflects it
    DUPLICATE = "duplicate"   # this (fingerprint, startsAt, status) was applied already
    STALE = "stale"           # a firing notification for an episode already resolved: recorded, ignored


# A locked database fails fast: a short busy wait (held under the store's lock) instead of sqlite's 5 s, so
# queued requests answer 503 with Retry-After at once and the sender retries (issue 11).
BUSY_TIMEOUT_SECONDS = 0.25


def fault_kind(e: sqlite3.Error) -> str:
    """The storage fault behind a sqlite error, in words an operator acts on."""
    msg = str(e).lower()
    if "full" in msg:
        return "disk full"
    if "locked" in msg or "busy" in msg:
        return "database locked"
    if "i/o" in msg or "readonly" in msg or "read-only" in msg or "unable to open" in msg:
        return "I/O error"
    return "database error"


class DuplicateAction(StorageError):
    """An action with the same idempotency key exists already (one action per key, ever)."""
# ---- end issue 11


class Store:
    """Durable state of the service. Thread-safe; every method is one transaction."""

    def __init__(self, path: Path | str, busy_timeout: float = BUSY_TIMEOUT_SECONDS):
        self.path = str(path)
        self._fault: str | None = None   # the storage fault logged last (logged once until writes succeed)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            for table, column, ddl in MIGRATIONS:
                if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(ddl)
            self._db.executescript(INDEXES)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the database {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ plumbing

    def _tx(self) -> _Tx:
        return _Tx(self)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StorageError(f"database read failed: {e}") from e

    # ------------------------------------------------------------ incidents

    def save_incident(self, inc: Incident, timeline: Sequence[TimelineEntry] | None = None) -> Incident:
        """Write ``inc`` and its new timeline entries in one transaction; returns what was stored.

        Writers do not race (issue 11): the row is read back inside the transaction and a writer working
        from an older copy (a detection cycle while a person acknowledged or resolved) is merged with it
        by :func:`diagnosis.lifecycle.merge_concurrent` instead of overwriting it; ``version`` counts writes.
        """
        with self._tx() as db:
            row = db.execute("SELECT doc, version FROM incidents WHERE id=?", (inc.id,)).fetchone()
            out, version = inc, 1
            if row is not None:
                out = lifecycle.merge_concurrent(Incident.from_dict(json.loads(row[0])), inc)
                version = int(row[1]) + 1
            db.execute("INSERT INTO incidents (id, model, dedup_key, status, opened_at, updated_at, doc, version) "
                       "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET status=excluded.status, "
                       "updated_at=excluded.updated_at, doc=excluded.doc, version=excluded.version",
                       (out.id, out.model, out.dedup_key, out.status.value, out.opened_at, out.updated_at,
                        json.dumps(out.to_dict()), version))
            for entry in timeline or ():
                self._append(db, inc.id, entry)
        return out

    def incident_version(self, incident_id: str) -> int:
        """How many times the incident was written (its row version)."""
        rows = self._query("SELECT version FROM incidents WHERE id=?", (incident_id,))
        if not rows:
            raise NotFound(f"no incident {incident_id!r}")
        return int(rows[0][0])

    def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        with self._tx() as db:
            self._append(db, incident_id, entry)

    @staticmethod
    def _append(db: sqlite3.Connection, incident_id: str, entry: TimelineEntry) -> None:
        (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM timeline WHERE incident_id=?",
                            (incident_id,)).fetchone()
        db.execute("INSERT INTO timeline VALUES (?,?,?,?,?,?)",
                   (incident_id, seq, entry.at, entry.kind.value, entry.message, json.dumps(entry.data, default=str)))

    def incident(self, incident_id: str) -> Incident:
        rows = self._query("SELECT doc FROM incidents WHERE id=?", (incident_id,))
        if not rows:
            raise NotFound(f"no incident {incident_id!r}")
        return Incident.from_dict(json.loads(rows[0][0]))

    def incidents(self, status: IncidentStatus | None = None, model: str | None = None,
                  limit: int = 100) -> list[Incident]:
        sql, args = "SELECT doc FROM incidents WHERE 1=1", list[Any]()
        if status is not None:
            sql += " AND status=?"
            args.append(status.value)
        if model is not None:
            sql += " AND model=?"
            args.append(model)
        sql += " ORDER BY opened_at DESC LIMIT ?"
        args.append(limit)
        return [Incident.from_dict(json.loads(r[0])) for r in self._query(sql, tuple(args))]

    def active_incident(self, dedup_key: str) -> Incident | None:
        rows = self._query("SELECT doc FROM incidents WHERE dedup_key=? AND status!=? ORDER BY opened_at DESC "
                           "LIMIT 1", (dedup_key, IncidentStatus.RESOLVED.value))
        return Incident.from_dict(json.loads(rows[0][0])) if rows else None

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        rows = self._query("SELECT at, kind, message, data FROM timeline WHERE incident_id=? ORDER BY seq",
                           (incident_id,))
        return [TimelineEntry(at, TimelineKind(kind), msg, json.loads(data)) for at, kind, msg, data in rows]

    # ------------------------------------------------------------ evidence

    def save_evidence(self, ev: Evidence) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO evidence VALUES (?,?,?,?,?,?)",
                       (ev.id, ev.model, ev.kind.value, ev.name, ev.at, json.dumps(ev.to_dict(), default=str)))

    def evidence(self, ids: Sequence[str]) -> list[Evidence]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT doc FROM evidence WHERE id IN ({marks}) ORDER BY at", tuple(ids))
        return [Evidence.from_dict(json.loads(r[0])) for r in rows]

    def recent_evidence(self, model: str, since: float, kind: str | None = None) -> list[Evidence]:
        sql, args = "SELECT doc FROM evidence WHERE model=? AND at>=?", [model, since]
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        rows = self._query(sql + " ORDER BY at", tuple(args))
        return [Evidence.from_dict(json.loads(r[0])) for r in rows]

    def open_alerts(self, model: str) -> list[Evidence]:
        """Every alert of the model that is still firing, however long ago it started."""
        rows = self._query("SELECT doc FROM evidence WHERE model=? AND kind='alert' "
                           "AND json_extract(doc, '$.ended_at') IS NULL ORDER BY at", (model,))
        return [Evidence.from_dict(json.loads(r[0])) for r in rows]

    def models_with_active_incidents(self) -> list[str]:
        rows = self._query("SELECT DISTINCT model FROM incidents WHERE status!=?", (IncidentStatus.RESOLVED.value,))
        return [r[0] for r in rows]

    def models_with_open_alerts(self) -> list[str]:
        rows = self._query("SELECT DISTINCT model FROM evidence WHERE kind='alert' "
                           "AND json_extract(doc, '$.ended_at') IS NULL")
        return [r[0] for r in rows]

    # ------------------------------------------------------------ actions

    def save_action(self, rec: ActionRecord) -> None:
        doc = rec.to_dict()
        try:
            with self._tx() as db:
                db.execute("INSERT INTO actions (id, incident_id, model, kind, status, created_at, doc, "
                           "idempotency_key) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                           "status=excluded.status, doc=excluded.doc",
                           (rec.id, rec.incident_id, rec.model, rec.kind.value, rec.status.value,
                            rec.created_at, json.dumps(doc, default=str), rec.idempotency_key or None))
        except StorageError as e:
            if isinstance(e.__cause__, sqlite3.IntegrityError):
                raise DuplicateAction(f"action {rec.id}: idempotency key {rec.idempotency_key!r} is taken by "
                                      f"another action") from e
            raise

    def action(self, action_id: str) -> ActionRecord:
        rows = self._query("SELECT doc FROM actions WHERE id=?", (action_id,))
        if not rows:
            raise NotFound(f"no action {action_id!r}")
        return ActionRecord.from_dict(json.loads(rows[0][0]))

    def actions(self, incident_id: str | None = None, model: str | None = None,
                statuses: tuple[ActionStatus, ...] = ()) -> list[ActionRecord]:
        sql, args = "SELECT doc FROM actions WHERE 1=1", []
        if incident_id:
            sql += " AND incident_id=?"
            args.append(incident_id)
        if model:
            sql += " AND model=?"
            args.append(model)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args.extend(s.value for s in statuses)
        return [ActionRecord.from_dict(json.loads(r[0]))
                for r in self._query(sql + " ORDER BY created_at", tuple(args))]

    # ------------------------------------------------------------ alert notifications (webhook dedup)

    def record_notification(self, fingerprint: str, starts_at: str, status: str,
                            evidence: Evidence | None) -> bool:
        """Store one alert notification; False when (fingerprint, startsAt, status) was seen already."""
        with self._tx() as db:
            seen = db.execute("SELECT 1 FROM alert_notifications WHERE fingerprint=? AND starts_at=? AND status=?",
                              (fingerprint, starts_at, status)).fetchone()
            if seen:
                return False
            db.execute("INSERT INTO alert_notifications VALUES (?,?,?,?,?)",
                       (fingerprint, starts_at, status, time.time(), evidence.id if evidence else None))
            if evidence is not None:
                db.execute("INSERT OR REPLACE INTO evidence VALUES (?,?,?,?,?,?)",
                           (evidence.id, evidence.model, evidence.kind.value, evidence.name, evidence.at,
                            json.dumps(evidence.to_dict(), default=str)))
            return True

    def apply_notification(self, fingerprint: str, starts_at: str, status: str, firing: Evidence,
                           ended_at: float | None, received_at: float) -> NotificationOutcome:
        """Apply one alert notification in one transaction (issue 11: no check-then-write race).

        The order on (startsAt, endsAt, status): for one episode (fingerprint, startsAt), resolved wins over
        firing whatever the arrival order. A firing notification never reopens a resolved episode (it is
        recorded as stale); a resolved one ends the episode's evidence, keeping what firing stored. Each
        (fingerprint, startsAt, status) is applied once; a repeat is a duplicate.
        """
        with self._tx() as db:
            seen = {r[0] for r in db.execute("SELECT status FROM alert_notifications WHERE fingerprint=? "
                                             "AND starts_at=?", (fingerprint, starts_at))}
            if status in seen:
                return NotificationOutcome.DUPLICATE
            db.execute("INSERT INTO alert_notifications VALUES (?,?,?,?,?)",
                       (fingerprint, starts_at, status, received_at, firing.id))
            if status == "firing" and "resolved" in seen:
                return NotificationOutcome.STALE
            prior = db.execute("SELECT doc FROM evidence WHERE id=?", (firing.id,)).fetchone()
            ev = firing
            if status == "resolved":
                base = Evidence.from_dict(json.loads(prior[0])) if prior else firing
                ev = replace(base, ended_at=ended_at if ended_at is not None else received_at)
            db.execute("INSERT OR REPLACE INTO evidence VALUES (?,?,?,?,?,?)",
                       (ev.id, ev.model, ev.kind.value, ev.name, ev.at, json.dumps(ev.to_dict(), default=str)))
            return NotificationOutcome.ACCEPTED

    def notification_status(self, fingerprint: str, starts_at: str) -> set[str]:
        rows = self._query("SELECT status FROM alert_notifications WHERE fingerprint=? AND starts_at=?",
                           (fingerprint, starts_at))
        return {r[0] for r in rows}

    # ------------------------------------------------------------ small key/value state (checkpoints)

    def put(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?,?)", (key, json.dumps(value, default=str)))

    def get(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM kv WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else default


class _Tx:
    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self.store._lock.release()
            raise self._failed("database unavailable", e) from e
        return self.store._db

    def _failed(self, what: str, e: sqlite3.Error) -> StorageError:
        """The StorageError for ``e``; the fault is logged once (with its cause) until writes succeed again."""
        kind = fault_kind(e)
        if self.store._fault != kind and not isinstance(e, sqlite3.IntegrityError):
            log.error("storage fault (%s) on %s: %s; writes answer 503 until it clears", kind, self.store.path, e)
            self.store._fault = kind
        return StorageError(f"{what} ({kind}): {e}")

    def _rollback(self) -> None:
        # After a failed COMMIT (disk full, I/O error) sqlite may have rolled back already, and the
        # ROLLBACK then fails too; the transaction is gone either way, which is what matters.
        try:
            self.store._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                try:
                    self.store._db.execute("COMMIT")
                except sqlite3.Error as e:
                    self._rollback()
                    raise self._failed("database write failed", e) from e
                if self.store._fault is not None:
                    log.warning("storage recovered (%s cleared) on %s", self.store._fault, self.store.path)
                    self.store._fault = None
            else:
                self._rollback()
                if isinstance(exc, sqlite3.Error):
                    raise self._failed("database write failed", exc) from exc
        finally:
            self.store._lock.release()


