"""SQLite storage for incidents, their timelines, evidence, actions and received alerts.

One file, WAL mode, one connection guarded by a lock (the service runs a few threads, not many
processes). Every write is a transaction that commits before the caller answers anyone, so a 2xx
means the data is on disk.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from diagnosis.types import Evidence, Incident, IncidentStatus, TimelineEntry
from incidentd.errors import NotFound, StorageError

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


class Store:
    """Durable state of the service. Thread-safe; every method is one transaction."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the database {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ plumbing

    def _tx(self) -> _Tx:
        return _Tx(self)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StorageError(f"database read failed: {e}") from e

    # ------------------------------------------------------------ incidents

    def save_incident(self, inc: Incident, timeline: list[TimelineEntry] | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO incidents VALUES (?,?,?,?,?,?,?)",
                       (inc.id, inc.model, inc.dedup_key, inc.status.value, inc.opened_at, inc.updated_at,
                        json.dumps(inc.to_dict())))
            for entry in timeline or ():
                self._append(db, inc.id, entry)

    def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        with self._tx() as db:
            self._append(db, incident_id, entry)

    @staticmethod
    def _append(db: sqlite3.Connection, incident_id: str, entry: TimelineEntry) -> None:
        (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM timeline WHERE incident_id=?",
                            (incident_id,)).fetchone()
        db.execute("INSERT INTO timeline VALUES (?,?,?,?,?,?)",
                   (incident_id, seq, entry.at, entry.kind, entry.message, json.dumps(entry.data, default=str)))

    def incident(self, incident_id: str) -> Incident:
        rows = self._query("SELECT doc FROM incidents WHERE id=?", (incident_id,))
        if not rows:
            raise NotFound(f"no incident {incident_id!r}")
        return Incident.from_dict(json.loads(rows[0][0]))

    def incidents(self, status: IncidentStatus | None = None, model: str | None = None,
                  limit: int = 100) -> list[Incident]:
        sql, args = "SELECT doc FROM incidents WHERE 1=1", []
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
        return [TimelineEntry(at, kind, msg, json.loads(data)) for at, kind, msg, data in rows]

    # ------------------------------------------------------------ evidence

    def save_evidence(self, ev: Evidence) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO evidence VALUES (?,?,?,?,?,?)",
                       (ev.id, ev.model, ev.kind.value, ev.name, ev.at, json.dumps(ev.to_dict(), default=str)))

    def evidence(self, ids: list[str]) -> list[Evidence]:
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

    def save_action(self, doc: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO actions VALUES (?,?,?,?,?,?,?)",
                       (doc["id"], doc["incident_id"], doc["model"], doc["kind"], doc["status"],
                        doc["created_at"], json.dumps(doc, default=str)))

    def action(self, action_id: str) -> dict[str, Any]:
        rows = self._query("SELECT doc FROM actions WHERE id=?", (action_id,))
        if not rows:
            raise NotFound(f"no action {action_id!r}")
        return json.loads(rows[0][0])

    def actions(self, incident_id: str | None = None, model: str | None = None,
                statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        sql, args = "SELECT doc FROM actions WHERE 1=1", []
        if incident_id:
            sql += " AND incident_id=?"
            args.append(incident_id)
        if model:
            sql += " AND model=?"
            args.append(model)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args.extend(statuses)
        return [json.loads(r[0]) for r in self._query(sql + " ORDER BY created_at", tuple(args))]

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
            raise StorageError(f"database unavailable: {e}") from e
        return self.store._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.store._db.execute("COMMIT")
                except sqlite3.Error as e:
                    self.store._db.execute("ROLLBACK")
                    raise StorageError(f"database write failed: {e}") from e
            else:
                self.store._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"database write failed: {exc}") from exc
        finally:
            self.store._lock.release()




# Issue 16: state lives behind the SQLAlchemy repository (SQLite by default, PostgreSQL for replicas) with
# the same methods as the class above, which stays only until its callers' branches are merged.
from incidentd.storage.repository import Repository as Store  # noqa: E402,F811
