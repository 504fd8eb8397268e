"""Turns an ``Authorization`` header into an Identity: API key, legacy webhook token, OIDC JWT, or anonymous."""
from __future__ import annotations

import base64
import binascii
import hmac
from typing import TYPE_CHECKING

from incidentd.auth.keys import PREFIX, KeyRing
from incidentd.auth.scopes import AuthMethod, Identity, Scope

if TYPE_CHECKING:
    from incidentd.auth.oidc import JwtVerifier
    from incidentd.config import Settings
    from incidentd.store import Store


class InvalidCredential(Exception):
    """A credential was presented and is not valid (unknown, revoked, expired, badly formed)."""


class Authenticator:
    """One per app. ``identify(header)``: the identity, anonymous when no credential was sent."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.keys = KeyRing(store)
        self.jwt: JwtVerifier | None = None
        if settings.security.oidc is not None:
            from incidentd.auth.oidc import JwtVerifier

            self.jwt = JwtVerifier(settings.security.oidc)
        self.anonymous = Identity("anonymous", frozenset(settings.security.anonymous_scopes), AuthMethod.ANONYMOUS)

    def credentials_configured(self) -> bool:
        """Whether any credential can authenticate: an active key, the webhook token, or OIDC."""
        return bool(self.settings.webhook_token) or self.jwt is not None or self.store.active_key_count() > 0

    def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            return self.anonymous
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            # Alertmanager's http_config.basic_auth: any user name, the key (or webhook token) as password.
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidCredential("malformed basic credentials") from None
            _, sep, value = decoded.partition(":")
            if not sep:
                raise InvalidCredential("malformed basic credentials")
        elif scheme.lower() != "bearer":
            raise InvalidCredential("use 'Authorization: Bearer <key>'")
        if not value:
            raise InvalidCredential("empty credential")
        return self._check(value)

    def _check(self, secret: str) -> Identity:
        if secret.startswith(PREFIX):
            info = self.keys.verify(secret)
            if info is not None:
                return Identity(info.name, info.scopes, AuthMethod.API_KEY)
        token = self.settings.webhook_token
        if token and hmac.compare_digest(secret.encode(), token.encode()):
            return Identity("webhook-token", frozenset({Scope.INGEST}), AuthMethod.WEBHOOK_TOKEN)
        if self.jwt is not None and secret.count(".") == 2:
            ident = self.jwt.verify(secret)
            if ident is not None:
                return ident
        raise InvalidCredential("unknown, revoked or expired credential")
