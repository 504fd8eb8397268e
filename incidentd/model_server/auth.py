"""The model server's admin token: a FastAPI dependency guarding ``/admin/*`` (fault injection included).

With a token configured, every admin request must carry ``Authorization: Bearer <token>`` (compared in
constant time). Without one, the server refuses to listen beyond loopback unless ``--insecure``
(``check_admin_bind``), so that an open admin API is reachable only from the same host.

    >>> guard = AdminToken("s3cret")
    >>> # @app.post("/admin/load", dependencies=[Depends(guard)])
"""
from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import HTTPException, Request

from incidentd.auth.bind import is_loopback

TOKEN_ENV = "INCIDENTD_MODEL_SERVER_ADMIN_TOKEN"


class AdminToken:
    """Dependency: 401 unless the request carries the admin token (no-op when no token is configured)."""

    def __init__(self, token: str | None):
        self._token = token.encode() if token else None

    @property
    def configured(self) -> bool:
        return self._token is not None

    def __call__(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token):
            raise HTTPException(401, "the admin API needs 'Authorization: Bearer <admin token>'",
                                headers={"WWW-Authenticate": "Bearer"})


def load_token(token_file: Path | None) -> str | None:
    """The admin token from ``token_file`` (first line) or the environment; None when neither is set."""
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file}: the admin token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def check_admin_bind(host: str, token: str | None, insecure: bool) -> str | None:
    """An error message when the server must not start; None when it may."""
    if token or is_loopback(host) or insecure:
        return None
    return (f"refusing to listen on {host} with an open admin API: give --admin-token-file (or "
            f"{TOKEN_ENV}), listen on 127.0.0.1, or pass --insecure")
