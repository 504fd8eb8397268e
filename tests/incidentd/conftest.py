"""Remediator tests act on a real model server (the fixtures of tests/model_server)."""
from tests.model_server.conftest import registry_dir, template_registry  # noqa: F401
