"""The scopes an identity can hold, and the identity a request is made by."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.StrEnum):
    READ = "read"          # incidents, models, signals, plots
    RESPOND = "respond"    # ack, resolve, comment
    APPROVE = "approve"    # approve or deny plans
    INGEST = "ingest"      # webhooks and /events
    ADMIN = "admin"        # keys


class AuthMethod(enum.StrEnum):
    API_KEY = "api_key"
    WEBHOOK_TOKEN = "webhook_token"   # the legacy shared ``webhook_token`` setting: ingest only
    JWT = "jwt"
    ANONYMOUS = "anonymous"


def parse_scopes(text: str | list[str]) -> frozenset[Scope]:
    """``"read,respond"`` (or a list) -> scopes; an unknown name is an error that names it."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise ValueError("at least one scope is needed: " + ", ".join(s.value for s in Scope))
    bad = [n for n in names if n not in Scope.__members__.values()]
    if bad:
        raise ValueError(f"unknown scope {bad[0]!r}; known: {', '.join(s.value for s in Scope)}")
    return frozenset(Scope(n) for n in names)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request, as established by a credential (never by a field of the body).

        >>> Identity("alice", frozenset({Scope.READ}), AuthMethod.API_KEY).can(Scope.READ)
        True
    """

    name: str
    scopes: frozenset[Scope]
    method: AuthMethod

    @property
    def authenticated(self) -> bool:
        return self.method is not AuthMethod.ANONYMOUS

    @property
    def label(self) -> str:
        """How the audit trail names this identity: ``key:alice``, ``jwt:alice@example.com``, ``anonymous``."""
        if self.method is AuthMethod.ANONYMOUS:
            return "anonymous"
        prefix = {AuthMethod.API_KEY: "key", AuthMethod.WEBHOOK_TOKEN: "token", AuthMethod.JWT: "jwt"}[self.method]
        return f"{prefix}:{self.name}"

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    def audit(self) -> dict[str, object]:
        """The identity as it is written into timeline entries and action audit records."""
        return {"actor": self.label, "auth": self.method.value, "authenticated": self.authenticated}
