"""The model server's settings: validated at start-up and passed in."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ModelServerSettings:
    """Validated at start-up and passed in; ``registry_dir`` is resolved to an absolute path."""

    registry_dir: Path
    model_name: str = "digits"
    enable_fault_injection: bool = False
    device: str = "auto"
    initial_version: str = "v1"
    prediction_log_size: int = 20_000
    feedback_log_size: int = 20_000
    train_epochs: int = 25
    torch_threads: int = 1          # inference on a tiny MLP: one thread is fastest and kindest
    admin_token: str | None = None  # required on /admin/* when set (incidentd/model_server/auth.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "registry_dir", Path(self.registry_dir).expanduser().resolve())
        if self.prediction_log_size < 1 or self.feedback_log_size < 1:
            raise ValueError("log sizes must be >= 1")
