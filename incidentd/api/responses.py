"""The error body every 4xx/5xx carries, and the status codes each kind of route declares in OpenAPI."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    error: str
    fields: list[str] | None = None


_WHY = {
    400: "The body is not valid JSON (or not UTF-8).",
    401: "No credential, or one that is unknown, revoked or expired.",
    403: "The credential lacks the scope this route needs.",
    404: "No such incident, action, model or key.",
    409: "The state does not allow it (e.g. approving a plan that expired or that the policy now refuses).",
    413: "The body is larger than security.max_body_bytes.",
    422: "A field is invalid; `fields` names each one.",
    429: "Too many mutating requests from this identity; see Retry-After.",
    503: "Storage unavailable, or (webhooks) too much load: retry; see Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each code with its description and the ErrorBody schema."""
    return {c: {"model": ErrorBody, "description": _WHY[c]} for c in codes}


AUTH = (401, 403)
READ = errors(*AUTH, 422, 503)
READ_ONE = errors(*AUTH, 404, 422, 503)
MUTATE = errors(400, *AUTH, 404, 409, 413, 422, 429, 503)
INGEST = errors(400, *AUTH, 413, 422, 429, 503)
WEBHOOK = errors(400, *AUTH, 413, 422, 503)
