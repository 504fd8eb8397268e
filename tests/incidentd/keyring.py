"""Test helper: issue API keys straight into a runtime's store (as `incidentd keys create` does)."""
from __future__ import annotations

from incidentd.auth.keys import create_key
from incidentd.auth.scopes import Scope
from incidentd.store import Store

ALL = tuple(Scope)


def bearer(store: Store, name: str, *scopes: Scope) -> dict[str, str]:
    """Headers carrying a new key with ``scopes`` (all of them when none are named)."""
    key = create_key(store, name, frozenset(scopes or ALL)).key
    return {"Authorization": f"Bearer {key}"}
