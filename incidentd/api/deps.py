"""Typed dependencies for the routes: the runtime and its parts, and who is calling (identity and scope)."""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from incidentd.auth.authenticator import Authenticator, InvalidCredential
from incidentd.auth.ratelimit import RateLimiter
from incidentd.auth.scopes import Identity, Scope
from incidentd.runtime import Runtime
from incidentd.store import Store

PUBLIC: Literal["public"] = "public"
# Declares the bearer scheme in the OpenAPI schema; the header itself is parsed by the Authenticator
# (which also takes HTTP basic credentials, for Alertmanager's basic_auth).
_bearer = HTTPBearer(auto_error=False, description="An API key (`incidentd keys create`) or an OIDC JWT.")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_store(request: Request) -> Store:
    return request.app.state.runtime.store


class Requires:
    """Dependency: the caller must hold ``scope``; mutating routes are also rate-limited per identity.

    ``webhook``: the route is Alertmanager's, which retries only on 5xx, so load (rate, concurrency) is
    answered with 503 and ``Retry-After`` instead of 429.
    """

    def __init__(self, scope: Scope, mutating: bool = False, webhook: bool = False):
        self.scope, self.mutating, self.webhook = scope, mutating, webhook

    def __call__(self, request: Request, _: Annotated[object, Depends(_bearer)] = None) -> Iterator[Identity]:
        ident = identify(request)
        if not ident.can(self.scope):
            if not ident.authenticated:
                raise HTTPException(401, "a credential is required: 'Authorization: Bearer <key>'",
                                    headers={"WWW-Authenticate": "Bearer"})
            raise HTTPException(403, f"{ident.label} lacks the {self.scope.value!r} scope")
        if not self.mutating:
            yield ident
            return
        limiter: RateLimiter = request.app.state.webhook_limiter if self.webhook else request.app.state.rate_limiter
        client = request.client.host if request.client else "?"
        wait = limiter.take(ident.label if ident.authenticated else f"anonymous@{client}")
        if wait > 0:
            raise HTTPException(503 if self.webhook else 429, f"rate limit for {ident.label}: retry later",
                                headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if not self.webhook:
            yield ident
            return
        slots: threading.BoundedSemaphore = request.app.state.webhook_slots
        if not slots.acquire(blocking=False):
            raise HTTPException(503, "too many deliveries in flight: retry later", headers={"Retry-After": "5"})
        try:
            yield ident
        finally:
            slots.release()


class Public:
    """Dependency marking a route that answers without a credential (the authorization matrix reads it)."""

    def __call__(self) -> None:
        return None


def identify(request: Request) -> Identity:
    auth: Authenticator = request.app.state.authenticator
    try:
        return auth.identify(request.headers.get("authorization"))
    except InvalidCredential as e:
        raise HTTPException(401, str(e), headers={"WWW-Authenticate": "Bearer"}) from None


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every API route of an app or router, through included routers (FastAPI >= 0.165 keeps them nested)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):
            yield from api_routes(r.original_router.routes)


def scope_of(route: APIRoute) -> Scope | Literal["public"] | None:
    """The scope a route requires, ``"public"``, or None when the route declares no policy (a bug)."""
    for dep in route.dependant.dependencies:
        if isinstance(dep.call, Requires):
            return dep.call.scope
        if isinstance(dep.call, Public):
            return PUBLIC
    return None


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
StoreDep = Annotated[Store, Depends(get_store)]
Reader = Annotated[Identity, Depends(Requires(Scope.READ))]
Responder = Annotated[Identity, Depends(Requires(Scope.RESPOND, mutating=True))]
Approver = Annotated[Identity, Depends(Requires(Scope.APPROVE, mutating=True))]
Ingester = Annotated[Identity, Depends(Requires(Scope.INGEST, mutating=True))]
WebhookIngester = Annotated[Identity, Depends(Requires(Scope.INGEST, mutating=True, webhook=True))]
Admin = Annotated[Identity, Depends(Requires(Scope.ADMIN, mutating=True))]
AdminReader = Annotated[Identity, Depends(Requires(Scope.ADMIN))]
