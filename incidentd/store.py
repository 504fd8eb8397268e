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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from diagnosis.types import Evidence, Incident, IncidentStatus, TimelineEntry, TimelineKind
from incidentd.errors import NotFound, StorageError
from remediation.types import ActionRecord, ActionStatus

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
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
  created_at REAL NOT NULL, revoked_at REAL);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
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

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StorageError(f"database read failed: {e}") from e

    # ------------------------------------------------------------ incidents

    def save_incident(self, inc: Incident, timeline: Sequence[TimelineEntry] | None = None) -> None:
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
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO actions VALUES (?,?,?,?,?,?,?)",
                       (rec.id, rec.incident_id, rec.model, rec.kind.value, rec.status.value,
                        rec.created_at, json.dumps(doc, default=str)))

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

    def record_notifications(self, items: list[tuple[str, str, str, Evidence | None]]) -> list[bool]:
        """``record_notification`` for a whole delivery in one transaction; True where it was new."""
        out: list[bool] = []
        with self._tx() as db:
            now = time.time()
            for fingerprint, starts_at, status, evidence in items:
                cur = db.execute("INSERT OR IGNORE INTO alert_notifications VALUES (?,?,?,?,?)",
                                 (fingerprint, starts_at, status, now, evidence.id if evidence else None))
                out.append(cur.rowcount == 1)
                if cur.rowcount == 1 and evidence is not None:
                    db.execute("INSERT OR REPLACE INTO evidence VALUES (?,?,?,?,?,?)",
                               (evidence.id, evidence.model, evidence.kind.value, evidence.name, evidence.at,
                                json.dumps(evidence.to_dict(), default=str)))
        return out

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


    # ------------------------------------------------------------ API keys (hashed; see incidentd/auth/keys.py)

    def add_key(self, key_id: str, name: str, scopes: list[str], salt: bytes, digest: bytes, at: float) -> None:
        """Store a new key's hash; a second active key of the same name is a Conflict."""
        from incidentd.errors import Conflict

        with self._tx() as db:
            if db.execute("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,)).fetchone():
                raise Conflict(f"an active key named {name!r} exists; revoke it first or pick another name")
            db.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,NULL)",
                       (key_id, name, ",".join(scopes), salt, digest, at))

    def key(self, key_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT id, name, scopes, salt, hash, created_at, revoked_at FROM api_keys WHERE id=?",
                           (key_id,))
        return _key_row(rows[0]) if rows else None

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT id, name, scopes, salt, hash, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [_key_row(r) for r in self._query(sql + " ORDER BY created_at")]

    def revoke_key(self, name_or_id: str, at: float) -> int:
        """Revoke the active key with this name or id; returns how many were revoked (0 or 1)."""
        with self._tx() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at=? WHERE (name=? OR id=?) AND revoked_at IS NULL",
                             (at, name_or_id, name_or_id))
            return cur.rowcount

    def active_key_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")[0][0])


def _key_row(r: tuple) -> dict[str, Any]:
    return {"id": r[0], "name": r[1], "scopes": [s for s in r[2].split(",") if s], "salt": r[3], "hash": r[4],
            "created_at": r[5], "revoked_at": r[6]}


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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
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


