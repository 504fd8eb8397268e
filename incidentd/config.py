"""Settings: validated at start-up, passed in, never read from globals. YAML file and/or INCIDENTD_* env."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from incidentd.errors import ConfigError
from remediation.types import ActionKind, ActionMode


class ExecutorSettings(BaseModel):
    """How restart (and, on Kubernetes, rollback) reach the serving instance.

    ``local``: the process the service supervises (``supervise_command``, embedded mode); ``systemd``:
    one service unit; ``kubernetes``: one Deployment's container through the official client (extra
    ``k8s``), rollback by setting ``image_template.format(version=KNOWN_GOOD)`` when a template is given.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "systemd", "kubernetes"] = "local"
    unit: str | None = None
    scope: Literal["system", "user"] = "system"
    namespace: str | None = None
    deployment: str | None = None
    container: str | None = None
    image_template: str | None = None
    rollout_timeout_seconds: float = Field(300.0, gt=0)
    max_unavailable: int = Field(1, ge=1)   # blast radius: replicas a rollout may take down at once

    @model_validator(mode="after")
    def _complete(self) -> ExecutorSettings:
        # The executors validate names strictly (one unit / one Deployment, no globs or selectors); doing
        # it here turns a typo into a start-up error instead of a failed action during an incident.
        from remediation.executors_k8s import KubernetesDeployment, validate_image
        from remediation.executors_systemd import validate_unit

        if self.kind == "systemd":
            if not self.unit:
                raise ValueError("executor kind 'systemd' needs 'unit'")
            validate_unit(self.unit)
        if self.kind == "kubernetes":
            missing = [k for k in ("namespace", "deployment", "container") if not getattr(self, k)]
            if missing:
                raise ValueError(f"executor kind 'kubernetes' needs {', '.join(missing)}")
            KubernetesDeployment(self.namespace, self.deployment, self.container)   # type: ignore[arg-type]
            if self.image_template is not None:
                if "{version}" not in self.image_template:
                    raise ValueError("image_template must contain '{version}'")
                validate_image(self.image_template.format(version="v1"))
        elif self.image_template is not None:
            raise ValueError("image_template applies to executor kind 'kubernetes' only")
        return self


class RemediationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_mode: ActionMode = ActionMode.AUTO
    modes: dict[ActionKind, ActionMode] = Field(default_factory=dict)
    cooldown_seconds: float = Field(300.0, ge=0)
    max_actions_per_incident: int = Field(2, ge=1)
    verify_seconds: float = Field(120.0, gt=0)
    min_confidence: float = Field(0.6, ge=0, le=1)
    max_actions_per_window: int = Field(6, ge=1)
    rate_window_seconds: float = Field(3600.0, gt=0)
    flap_limit: int = Field(3, ge=1)
    flap_window_seconds: float = Field(3600.0, gt=0)
    max_failed: int = Field(2, ge=1)
    act_after_cycles: int = Field(2, ge=1)
    restart_grace_seconds: float = Field(30.0, ge=0)
    clamp_bounds: str = "minmax"
    clamp_margin: float = Field(0.1, ge=0)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    revert_on_worse: bool = True

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[ActionKind, ActionMode]) -> dict[ActionKind, ActionMode]:
        if ActionKind.NOTIFY in v:
            raise ValueError("remediation.modes: notify changes nothing on the model and has no mode; "
                             f"set modes for {', '.join(k.value for k in ActionKind if k.changes_model)}")
        return v


class DetectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accuracy_window_seconds: float = Field(120.0, gt=0)
    error_window_seconds: float = Field(60.0, gt=0)
    counter_window_seconds: float = Field(60.0, gt=0)
    label_stall_seconds: float = Field(300.0, gt=0)
    request_stall_seconds: float = Field(30.0, gt=0)
    confirm_points: int = Field(2, ge=1)
    resolve_after_seconds: float = Field(120.0, ge=0)
    # A model not seen for this long (no metrics, no alerts, no active incident) is forgotten: its learned
    # baselines are saved to the store first, and restored if it comes back.
    evict_after_seconds: float = Field(3600.0, gt=0)
    # Alerts naming a model that no target exports and `models` does not list are stored as evidence, but
    # open incidents for at most this many such models (one each); the rest are refused and counted.
    max_unknown_models: int = Field(20, ge=0)


class NotifySettings(BaseModel):
    """Where escalations, notify recommendations and approval requests go (incidentd.notify)."""

    model_config = ConfigDict(extra="forbid")
    # The team's Alertmanager(s): each URL (both of an HA pair) gets every alert via POST /api/v2/alerts.
    alertmanager_url: list[str] = Field(default_factory=list)
    webhook_url: str | None = None            # optional generic outbound webhook (the same JSON list)
    external_url: str = "http://127.0.0.1:8080"   # how people reach this incidentd (the incident link)

    @field_validator("alertmanager_url", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("alertmanager_url", "webhook_url", "external_url")
    @classmethod
    def _http(cls, v: Any) -> Any:
        for u in ([v] if isinstance(v, str) else v or []):
            if not str(u).startswith(("http://", "https://")):
                raise ValueError(f"{u!r} is not an http(s) URL")
        return v


class Settings(BaseSettings):
    """Everything the service needs to run. Unknown keys are errors, not silently ignored."""

    model_config = SettingsConfigDict(env_prefix="INCIDENTD_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    database: Path = Path("incidentd.db")
    scrape_targets: list[str] = Field(default_factory=list)
    scrape_interval_seconds: float = Field(10.0, gt=0)
    detect_interval_seconds: float = Field(10.0, gt=0)
    retention_seconds: float = Field(1800.0, gt=0)
    prometheus_url: str | None = None
    elasticsearch_url: str | None = None
    webhook_token: str | None = None
    rules: list[Path] = Field(default_factory=list)
    use_default_rules: bool = True
    models: list[str] = Field(default_factory=list)
    model_server_url: str | None = None
    supervise_command: list[str] | None = None
    supervise_log: Path = Path("model-server.log")
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("scrape_targets", "prometheus_url", "model_server_url", "elasticsearch_url")
    @classmethod
    def _urls(cls, v: Any) -> Any:
        for u in ([v] if isinstance(v, str) else v or []):
            if not str(u).startswith(("http://", "https://")):
                raise ValueError(f"{u!r} is not an http(s) URL")
        return v

    @model_validator(mode="after")
    def _executor_fits(self) -> Settings:
        if self.remediation.executor.kind != "local" and self.supervise_command:
            raise ValueError(f"supervise_command runs the model server locally; it conflicts with executor "
                             f"kind {self.remediation.executor.kind!r}")
        return self

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> Settings:
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except FileNotFoundError:
                raise ConfigError(f"{p}: settings file not found") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"{p}: not valid YAML: {e}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{p}: settings must be a mapping")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as e:
            where = f"{path}: " if path else ""
            msgs = "; ".join(f"field '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}" for err in e.errors())
            raise ConfigError(f"{where}invalid settings: {msgs}") from None
