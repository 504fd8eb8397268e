"""The demo model server (``incidentd model-server``): a digits classifier behind an instrumented HTTP API.

Importing this package is cheap; torch is imported when an app is built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ModelServerSettings", "TrafficDriver", "create_app", "train_version"]

if TYPE_CHECKING:
    from incidentd.model_server.app import ModelServerSettings, create_app
    from incidentd.model_server.model import train_version
    from incidentd.model_server.traffic import TrafficDriver


def __getattr__(name: str) -> Any:
    if name in ("create_app", "ModelServerSettings"):
        from incidentd.model_server import app
        return getattr(app, name)
    if name == "train_version":
        from incidentd.model_server.model import train_version
        return train_version
    if name == "TrafficDriver":
        from incidentd.model_server.traffic import TrafficDriver
        return TrafficDriver
    raise AttributeError(name)
