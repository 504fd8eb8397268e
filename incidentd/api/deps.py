"""Typed dependencies for the routes: the runtime and its parts, taken from the app state."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from incidentd.runtime import Runtime
from incidentd.store import Store


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_store(request: Request) -> Store:
    return request.app.state.runtime.store


def check_webhook_auth(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = request.app.state.runtime.settings.webhook_token
    if token and authorization != f"Bearer {token}":
        raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
StoreDep = Annotated[Store, Depends(get_store)]
WebhookAuth = Depends(check_webhook_auth)
