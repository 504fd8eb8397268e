"""Settings: validated at start-up, passed in, never read from globals. YAML file and/or INCIDENTD_* env."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from incidentd.auth.scopes import Scope
from incidentd.errors import ConfigError
from remediation.types import ActionKind, ActionMode


class ExecutorSettings(BaseModel):
    """How restart (and, on Kubernetes, rollback) reach the serving instance.

    ``local``: the process the service supervises (``supervise_command``, embedded mode); ``systemd``:
    one service unit; ``kubernetes``: one Deployment's container through the official client (extra
    ``k8s``), rollback by setting ``image_template.format(version=KNOWN_GOOD)`` when a template is given.

    Third-party servers, one model each, through the server's own control API (README "Watch your own
    model server"): ``mlserver`` and ``triton`` (model repository API at ``url``), ``torchserve``
    (management API at ``url``), ``kserve`` (InferenceService ``inferenceservice`` in ``namespace``).
    incidentd keeps their known-good version (``known_good`` seeds it; a version that serves
    ``promote_after_seconds`` without an incident becomes known good).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "systemd", "kubernetes", "mlserver", "triton", "torchserve", "kserve"] = "local"
    unit: str | None = None
    scope: Literal["system", "user"] = "system"
    namespace: str | None = None
    deployment: str | None = None
    container: str | None = None
    image_template: str | None = None
    rollout_timeout_seconds: float = Field(300.0, gt=0)
    max_unavailable: int = Field(1, ge=1)   # blast radius: replicas a rollout may take down at once
    url: str | None = None                  # mlserver/triton: inference URL; torchserve: management URL
    model: str | None = None                # the one model acted on (mlserver, triton, torchserve)
    repository_dir: Path | None = None      # mlserver: its model repository (rollback sets versions aside)
    inferenceservice: str | None = None     # kserve
    headers: dict[str, str] = Field(default_factory=dict)   # e.g. Triton's triton-access-token
    known_good: str | None = None           # seed for the known-good version (storageUri for kserve)
    promote_after_seconds: float = Field(600.0, gt=0)
    ready_timeout_seconds: float = Field(120.0, gt=0)

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
        need = {"mlserver": ("url", "model"), "triton": ("url", "model"), "torchserve": ("url", "model"),
                "kserve": ("namespace", "inferenceservice")}.get(self.kind, ())
        missing = [k for k in need if not getattr(self, k)]
        if missing:
            raise ValueError(f"executor kind {self.kind!r} needs {', '.join(missing)}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"executor url {self.url!r} is not an http(s) URL")
        if self.repository_dir is not None and self.kind != "mlserver":
            raise ValueError("repository_dir applies to executor kind 'mlserver' only")
        if self.kind == "kserve":
            from remediation.executors_kserve import KServeInferenceService

            KServeInferenceService(self.namespace, self.inferenceservice)   # type: ignore[arg-type]
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
    cooldown_escalate_after_seconds: float = Field(120.0, ge=0)
    act_after_cycles: int = Field(2, ge=1)
    restart_grace_seconds: float = Field(30.0, ge=0)
    clamp_bounds: str = "minmax"
    clamp_margin: float = Field(0.1, ge=0)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    revert_on_worse: bool = True
    # --- approval (issue 12) ---
    approval_timeout_seconds: float = Field(3600.0, gt=0)   # a plan nobody answers expires and blocks nothing
    two_person_approval: bool = False                       # the approver is not the identity that requested it

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[ActionKind, ActionMode]) -> dict[ActionKind, ActionMode]:
        if ActionKind.NOTIFY in v:
            raise ValueError("remediation.modes: notify changes nothing on the model and has no mode; "
                             f"set modes for {', '.join(k.value for k in ActionKind if k.changes_model)}")
        return v


class SLOSettings(BaseModel):
    """A model's service-level objectives; a breach sustained over the signal's confirmation opens an incident."""

    model_config = ConfigDict(extra="forbid")
    latency_p90_seconds: float | None = Field(None, gt=0)


class ModelSettings(BaseModel):
    """What is known about one watched model: its SLOs, and a memory limit when none can be scraped."""

    model_config = ConfigDict(extra="forbid")
    slo: SLOSettings = Field(default_factory=SLOSettings)
    memory_limit_bytes: float | None = Field(None, gt=0)


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
    # Relative thresholds and slow faults (docs/faults.md, "Slow faults"); CatalogSettings has the meaning.
    latency_ratio: float = Field(3.0, gt=1)
    latency_floor_seconds: float = Field(0.0, ge=0)
    latency_sustain_seconds: float = Field(0.0, ge=0)
    process_cpu_ratio: float = Field(2.5, gt=1)
    process_cpu_floor_ratio: float = Field(0.0, ge=0, le=1)
    process_memory_ratio: float = Field(1.5, gt=1)
    process_memory_floor_bytes: float = Field(0.0, ge=0)
    trend_window_seconds: float = Field(1800.0, gt=0)
    exhaustion_horizon_seconds: float = Field(86_400.0, gt=0)
    exhaustion_lead_seconds: float = Field(1800.0, ge=0)
    disk_horizon_seconds: float = Field(86_400.0, gt=0)
    # Alerts naming a model that no target exports and `models` does not list are stored as evidence, but
    # open incidents for at most this many such models (one each); the rest are refused and counted.
    max_unknown_models: int = Field(20, ge=0)


class OidcSettings(BaseModel):
    """Bearer JWTs from an identity provider, checked against its JWKS; a claim says which scopes they hold."""

    model_config = ConfigDict(extra="forbid")
    jwks_url: str
    issuer: str
    audience: str
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)
    identity_claim: str = "sub"              # names the identity in the audit trail (e.g. "email")
    scopes_claim: str = "scope"              # a space-separated string or a list of strings
    scope_map: dict[str, list[Scope]] = Field(default_factory=dict)   # claim value -> scopes; empty: values
                                                                       # that are scope names count as such
    leeway_seconds: float = Field(30.0, ge=0)
    jwks_cache_seconds: float = Field(300.0, gt=0)
    jwks_timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, v: list[str]) -> list[str]:
        # A shared-secret algorithm would let anyone holding the public JWKS forge tokens (or "none" none).
        bad = [a for a in v if not a.startswith(("RS", "PS", "ES", "EdDSA"))]
        if bad:
            raise ValueError(f"algorithm {bad[0]!r} is not an asymmetric signature; use RS256, PS256, ES256 …")
        return v


class SecuritySettings(BaseModel):
    """Who may call the API, and the limits that keep hostile input cheap. See docs/security.md."""

    model_config = ConfigDict(extra="forbid")
    oidc: OidcSettings | None = None
    anonymous_scopes: list[Scope] = Field(default_factory=list)   # scopes a request with no credential holds
    metrics_public: bool = False              # /metrics answers without a credential (for a Prometheus scrape)
    docs_public: bool = False                 # /openapi.json, /docs and /redoc answer without a credential
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    rate_limit_per_second: float = Field(5.0, gt=0)   # mutating requests per identity, on average
    rate_limit_burst: int = Field(60, ge=1)
    # Alertmanager flushes many groups at once and retries only 5xx: its own, larger bucket, answered with 503.
    webhook_rate_per_second: float = Field(50.0, gt=0)
    webhook_burst: int = Field(500, ge=1)
    webhook_max_in_flight: int = Field(8, ge=1)       # concurrent Alertmanager deliveries; more get 503
    insecure: bool = False                    # allow a non-loopback bind without credentials (--insecure)


class DiscoverySettings(BaseModel):
    """Scrape targets beside ``scrape_targets``: the sidecars a Prometheus scrapes (by job / labels), or a
    Prometheus ``file_sd`` file. A model whose targets all disappear is retired (state evicted)."""

    model_config = ConfigDict(extra="forbid")
    prometheus_url: str | None = None
    job: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    file_sd: Path | None = None
    refresh_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _has_source(self) -> DiscoverySettings:
        if not self.prometheus_url and self.file_sd is None:
            raise ValueError("discovery needs prometheus_url or file_sd")
        if self.prometheus_url and not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"{self.prometheus_url!r} is not an http(s) URL")
        return self


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
    # Issue 16: a SQLAlchemy URL (postgresql+psycopg://user:pass@host/db) instead of the SQLite file; schema
    # migrations at start (default: yes for SQLite, no for PostgreSQL: `incidentd db upgrade`); retention.
    database_url: str | None = None
    database_migrate: bool | None = None
    retention_days: float = Field(90.0, gt=0)
    replica_id: str | None = None           # a name for this replica's leases (default host:pid)
    lease_seconds: float | None = Field(None, gt=0)   # default one detection interval, renewed every third
    discovery: DiscoverySettings | None = None
    scrape_targets: list[str] = Field(default_factory=list)
    scrape_interval_seconds: float = Field(10.0, gt=0)
    detect_interval_seconds: float = Field(10.0, gt=0)
    retention_seconds: float = Field(1800.0, gt=0)
    prometheus_url: str | None = None
    elasticsearch_url: str | None = None
    webhook_token: str | None = None           # legacy shared secret: an ingest-only credential (docs/security.md)
    model_server_admin_token: str | None = None   # sent by the executors to the model server's /admin API
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    rules: list[Path] = Field(default_factory=list)
    use_default_rules: bool = True
    # A list of names, or a mapping name -> ModelSettings (SLOs, memory limit); both read as a mapping.
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    model_server_url: str | None = None
    supervise_command: list[str] | None = None
    supervise_log: Path = Path("model-server.log")
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            bad = [m for m in v if not isinstance(m, str) or not m]
            if bad:
                raise ValueError(f"model names must be non-empty strings, got {bad}")
            return {m: {} for m in v}
        if isinstance(v, dict):
            return {k: {} if m is None else m for k, m in v.items()}
        return v

    def model_profiles(self) -> dict[str, dict[str, float]]:
        """Per-model thresholds for the signal catalog (``CatalogSettings`` field -> model -> value)."""
        return {
            "latency_slo_seconds": {m: s.slo.latency_p90_seconds for m, s in self.models.items()
                                    if s.slo.latency_p90_seconds is not None},
            "memory_limit_bytes": {m: s.memory_limit_bytes for m, s in self.models.items()
                                   if s.memory_limit_bytes is not None},
        }

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
