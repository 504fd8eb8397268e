"""OIDC/JWT bearer tokens: signature checked against the identity provider's JWKS (PyJWT), claims mapped to
scopes.

Uses ``jwt.PyJWKClient`` (keys fetched from ``jwks_url`` and cached) and ``jwt.decode`` with an explicit
algorithm list, audience and issuer; see https://pyjwt.readthedocs.io/en/stable/usage.html
("Retrieve RSA signing keys from a JWKS endpoint").
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from incidentd.auth.scopes import AuthMethod, Identity, Scope

if TYPE_CHECKING:
    from incidentd.config import OidcSettings

log = logging.getLogger(__name__)


class JwtVerifier:
    """Verifies a bearer JWT and returns the identity it names, or None when it is not valid."""

    def __init__(self, settings: OidcSettings):
        import jwt

        self.settings = settings
        self._jwt = jwt
        self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=settings.jwks_cache_seconds,
                                     timeout=settings.jwks_timeout_seconds)

    def verify(self, token: str) -> Identity | None:
        s = self.settings
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key
            claims = self._jwt.decode(token, key, algorithms=list(s.algorithms), audience=s.audience,
                                      issuer=s.issuer, leeway=s.leeway_seconds,
                                      options={"require": ["exp", "iat", s.identity_claim]})
        except self._jwt.PyJWTError as e:
            log.info("bearer JWT refused: %s", e)
            return None
        name = claims.get(s.identity_claim)
        if not isinstance(name, str) or not name:
            return None
        scopes = self.scopes_of(claims)
        return Identity(name[:200], scopes, AuthMethod.JWT)

    def scopes_of(self, claims: dict[str, Any]) -> frozenset[Scope]:
        """Claim values -> scopes: through ``scope_map`` when given, else values that are scope names."""
        raw = claims.get(self.settings.scopes_claim, [])
        values = raw.split() if isinstance(raw, str) else [v for v in raw if isinstance(v, str)] \
            if isinstance(raw, list) else []
        out: set[Scope] = set()
        for v in values:
            if self.settings.scope_map:
                out.update(self.settings.scope_map.get(v, ()))
            elif v in Scope.__members__.values():
                out.add(Scope(v))
        return frozenset(out)
