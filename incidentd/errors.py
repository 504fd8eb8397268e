"""One error hierarchy for the service and its edges."""
from __future__ import annotations

from detectors.errors import Conflict, IncidentdError, InvalidInput

__all__ = ["IncidentdError", "InvalidInput", "ConfigError", "SourceUnavailable", "NotFound", "Conflict",
           "StorageError"]


class ConfigError(IncidentdError):
    """Settings or a rule pack are invalid; the message names the file and field."""


class SourceUnavailable(IncidentdError):
    """A metric source (embedded store, Prometheus) cannot be read right now."""


class NotFound(IncidentdError):
    """An incident, action or version that does not exist."""


class StorageError(IncidentdError):
    """Evidence could not be stored durably; webhooks answer 5xx so the sender retries."""
