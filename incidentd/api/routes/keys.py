"""GET /keys, POST /keys, DELETE /keys/{name}: API keys, for identities with the ``admin`` scope.

The same functions back ``incidentd keys``; a new key is shown once, in the response that creates it.
"""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from incidentd.api.deps import Admin, AdminReader, StoreDep
from incidentd.api.responses import MUTATE, READ
from incidentd.auth import keys as keylib
from incidentd.auth.scopes import Scope
from incidentd.errors import NotFound

router = APIRouter(prefix="/keys", tags=["keys"])
KeyName = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


def _info(k: keylib.KeyInfo) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "scopes": sorted(s.value for s in k.scopes), "created_at": k.created_at,
            "revoked_at": k.revoked_at}


@router.get("", responses=READ)
def list_keys(store: StoreDep, who: AdminReader) -> dict[str, Any]:
    return {"keys": [_info(k) for k in keylib.list_keys(store)]}


@router.post("", status_code=201, responses=MUTATE)
def create_key(body: NewKey, store: StoreDep, who: Admin) -> dict[str, Any]:
    issued = keylib.create_key(store, body.name, frozenset(body.scopes))
    return {"name": issued.name, "key": issued.key, "scopes": sorted(s.value for s in issued.scopes),
            "id": issued.id, "created_by": who.label}


@router.delete("/{name}", responses=MUTATE)
def revoke_key(name: KeyName, store: StoreDep, who: Admin) -> dict[str, Any]:
    if not keylib.revoke_key(store, name, time.time()):
        raise NotFound(f"no active key {name!r}")
    return {"revoked": name, "by": who.label}

