"""The root of incidentd's error hierarchy; it lives in the bottom layer so every package can use it."""
from __future__ import annotations


class IncidentdError(Exception):
    """Base of every error incidentd raises on purpose."""


class InvalidInput(IncidentdError):
    """Input data is malformed (wrong shape, NaN where not allowed, unknown column); the message names it."""


class Conflict(IncidentdError):
    """A state transition that is not allowed (e.g. approving an executed action)."""
