"""API keys: random, shown once, stored as a salted scrypt hash in the service's database.

A key reads ``ikd_<id>_<secret>``. The id (not secret) finds the row; the secret is checked against the
stored scrypt hash with a constant-time compare. Verified keys are remembered in memory by a SHA-256 of the
whole key so that scrypt runs once per key and process, not once per request; revocation is read from the
database on every request, so a revoked key stops working at once.

    >>> store = Store(":memory:")
    >>> issued = create_key(store, "ci", frozenset({Scope.INGEST}))
    >>> KeyRing(store).verify(issued.key).name
    'ci'
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from incidentd.auth.scopes import Scope, parse_scopes
from incidentd.store import Store

PREFIX = "ikd_"
# RFC 7914 parameters: 16 MiB of memory and ~50 ms per check on a laptop. The secret has 256 bits of
# entropy, so the cost is a second line of defence for a leaked database, not the first.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: the only time its secret is known."""

    id: str
    name: str
    key: str
    scopes: frozenset[Scope]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: float
    revoked_at: float | None


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


def _valid_name(name: str) -> str:
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_.@" for c in name):
        raise ValueError(f"key name {name!r}: use 1-100 letters, digits, '-', '_', '.', '@'")
    return name


def create_key(store: Store, name: str, scopes: frozenset[Scope], now: float | None = None) -> IssuedKey:
    """Make a key, store its hash, return the key (the caller shows it once)."""
    if not scopes:
        raise ValueError("a key needs at least one scope")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    ordered = sorted(s.value for s in scopes)
    store.add_key(key_id, _valid_name(name), ordered, salt, _hash(secret, salt),
                  time.time() if now is None else now)
    return IssuedKey(key_id, name, f"{PREFIX}{key_id}_{secret}", frozenset(scopes))


def list_keys(store: Store, include_revoked: bool = False) -> list[KeyInfo]:
    return [KeyInfo(r["id"], r["name"], parse_scopes(r["scopes"]), r["created_at"], r["revoked_at"])
            for r in store.keys(include_revoked)]


def revoke_key(store: Store, name_or_id: str, now: float | None = None) -> bool:
    return store.revoke_key(name_or_id, time.time() if now is None else now) > 0


class KeyRing:
    """Checks presented keys against the store."""

    def __init__(self, store: Store):
        self.store = store
        self._verified: dict[str, bytes] = {}     # key id -> sha256 of the full key already checked
        self._lock = threading.Lock()

    def verify(self, presented: str) -> KeyInfo | None:
        """The key's info when ``presented`` is an active key, else None."""
        if not presented.startswith(PREFIX) or len(presented) > 200:
            return None
        key_id, sep, secret = presented[len(PREFIX):].partition("_")
        if not sep or not key_id or not secret:
            return None
        row = self.store.key(key_id)
        if row is None or row["revoked_at"] is not None:
            return None
        fingerprint = hashlib.sha256(presented.encode()).digest()
        with self._lock:
            known = self._verified.get(key_id)
        if known is None or not hmac.compare_digest(known, fingerprint):
            if not hmac.compare_digest(_hash(secret, row["salt"]), row["hash"]):
                return None
            with self._lock:
                self._verified[key_id] = fingerprint
        return KeyInfo(row["id"], row["name"], parse_scopes(row["scopes"]), row["created_at"], None)
