"""Roll back and restart one KServe InferenceService (``serving.kserve.io/v1beta1``) through the Kubernetes
API with the official client (``CustomObjectsApi``; JSON merge patches, as ``kubectl patch --type merge``).

The "version" of an InferenceService is the predictor's ``storageUri`` (``spec.predictor.model.storageUri``,
or ``spec.predictor.<framework>.storageUri`` in the older form).

- rollback to a known-good ``storageUri``:
  * a canary is in flight (``spec.predictor.canaryTrafficPercent`` below 100 and the latest revision
    takes traffic) and the known-good model is the previously rolled-out one: patch
    ``canaryTrafficPercent: 0``, all traffic goes back to ``status.components.predictor
    .previousRolledoutRevision`` (KServe's documented canary rollback);
  * otherwise: patch ``storageUri`` back to the known-good one (and drop ``canaryTrafficPercent``),
    which rolls a new revision out with the known-good model;
  * no-op when the known-good ``storageUri`` already takes all the traffic.
- restart = a rollout: ``spec.predictor.annotations["kubectl.kubernetes.io/restartedAt"]`` set to now
  (the annotation ``kubectl rollout restart`` writes), so KServe creates a new predictor revision.

Then it waits, as ``kubectl wait --for=condition=Ready`` would, until ``status.observedGeneration`` reaches
``metadata.generation``, ``Ready`` is ``True`` and the traffic is what it asked for.

Blast radius: one namespace, one InferenceService named exactly (no ``*``, no selectors); a restart is
refused while a canary is in flight, and in ``RawDeployment`` mode (annotation
``serving.kserve.io/deploymentMode``) the predictor's Deployment (``{name}-predictor``) is read first
and the same ``max_unavailable`` guard as remediation.executors_k8s applies to its strategy.

References: KServe docs "Canary rollout" (canaryTrafficPercent, rollback by setting it to 0), the
v1beta1 API reference (PredictorSpec, ComponentStatusSpec: traffic, previousRolledoutRevision).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remediation.executors_k8s import (
    _DNS1123_LABEL,
    _DNS1123_SUBDOMAIN,
    RESTARTED_AT,
    _check_name,
    rfc3339_now,
)
from remediation.executors_servers import Request, ServerOutcome
from remediation.types import ActionFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE = "serving.kserve.io/deploymentMode"
_FRAMEWORKS = ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "lightgbm", "pmml",
               "paddle", "huggingface")


@dataclass(frozen=True, slots=True)
class IsvcState:
    generation: int
    observed_generation: int
    ready: bool
    storage_uri: str
    framework: str
    canary_percent: int | None           # spec.predictor.canaryTrafficPercent
    latest_percent: int                  # traffic % on the latest revision (100 when no split is reported)
    previous_revision: str | None
    restarted_at: str | None
    raw_deployment: bool

    @property
    def canary_in_flight(self) -> bool:
        return self.canary_percent is not None and self.canary_percent < 100 and 0 < self.latest_percent < 100

    @property
    def serving(self) -> str:
        """The storageUri that takes all traffic, or what splits it."""
        if self.canary_in_flight:
            return f"{self.storage_uri} (canary {self.latest_percent}%)"
        if self.latest_percent == 0 and self.previous_revision:
            return f"revision {self.previous_revision}"
        return self.storage_uri


def isvc_state(obj: dict[str, Any]) -> IsvcState:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    pred = spec.get("predictor") or {}
    framework = next((f for f in _FRAMEWORKS if isinstance(pred.get(f), dict) and "storageUri" in pred[f]), "")
    uri = str(pred[framework]["storageUri"]) if framework else ""
    comp = (status.get("components") or {}).get("predictor") or {}
    traffic = comp.get("traffic") or []
    latest = [int(t.get("percent") or 0) for t in traffic if t.get("latestRevision")]
    conds = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return IsvcState(
        generation=int(meta.get("generation") or 0), observed_generation=int(status.get("observedGeneration") or 0),
        ready=ready, storage_uri=uri, framework=framework,
        canary_percent=pred.get("canaryTrafficPercent"), latest_percent=latest[0] if latest else 100,
        previous_revision=comp.get("previousRolledoutRevision"),
        restarted_at=(pred.get("annotations") or {}).get(RESTARTED_AT),
        raw_deployment=(meta.get("annotations") or {}).get(MODE) == "RawDeployment")


class KServeInferenceService:
    """One InferenceService's predictor. ``api_client`` defaults to in-cluster config, then kubeconfig."""

    kind = "kserve"

    def __init__(self, namespace: str, name: str, api_client: ApiClient | None = None,
                 rollout_timeout: float = 300.0, poll_interval: float = 2.0, request_timeout: float = 30.0,
                 max_unavailable: int = 1, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic, now: Callable[[], dt.datetime] | None = None):
        self.namespace = _check_name("namespace", namespace, _DNS1123_LABEL, 63)
        self.name = _check_name("inferenceservice", name, _DNS1123_SUBDOMAIN, 253)
        if max_unavailable < 1:
            raise ValueError("max_unavailable must be at least 1")
        self.max_unavailable = max_unavailable
        self._api_client = api_client
        self._custom: Any = None
        self.rollout_timeout, self.poll_interval, self.request_timeout = rollout_timeout, poll_interval, request_timeout
        self._sleep, self._monotonic, self._now = sleep, monotonic, now

    @property
    def model(self) -> str:
        return self.name

    @property
    def base_url(self) -> str:
        return f"http://{self.name}.{self.namespace}"     # for the admin adapter's base_url; never called

    @property
    def target(self) -> str:
        return f"inferenceservice/{self.name} -n {self.namespace}"

    @property
    def command(self) -> list[str]:
        return ["kubectl", "--namespace", self.namespace, "annotate", "--overwrite", f"inferenceservice/{self.name}",
                f"{RESTARTED_AT}=<now>"]

    # --- API access ---------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._api_client is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped library
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            self._api_client = client.ApiClient()
        return self._api_client

    def _api(self) -> Any:
        if self._custom is None:
            from kubernetes import client

            self._custom = client.CustomObjectsApi(self._client())
        return self._custom

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(group=GROUP, version=VERSION, namespace=self.namespace, plural=PLURAL, name=self.name,
                      _request_timeout=self.request_timeout, **kwargs)
        except ApiException as e:
            where = f"inferenceservice {self.namespace}/{self.name}"
            if e.status == 404:
                raise ActionFailed(f"{what}: {where} not found", retryable=False) from e
            retry = e.status in (409, 429) or (e.status or 0) >= 500
            raise ActionFailed(f"{what} {where}: the API server refused with {e.status} {e.reason}: "
                               f"{str(e.body)[:300]}", retryable=retry) from e
        except HTTPError as e:
            raise ActionFailed(f"{what}: the Kubernetes API is unreachable: {e}", retryable=True) from e

    def read(self) -> IsvcState:
        obj = self._call("read", self._api().get_namespaced_custom_object)
        meta = obj.get("metadata") or {}
        if meta.get("name") != self.name or meta.get("namespace") not in (None, self.namespace):
            raise ActionFailed(f"API answered for {meta.get('namespace')}/{meta.get('name')}, not "
                               f"{self.namespace}/{self.name}", retryable=False)
        st = isvc_state(obj)
        if not st.framework:
            raise ActionFailed(f"inferenceservice {self.namespace}/{self.name} has no predictor storageUri",
                               retryable=False)
        return st

    def _patch(self, what: str, body: dict[str, Any]) -> None:
        self._call(what, self._api().patch_namespaced_custom_object, body=body)

    def _check_blast_radius(self, st: IsvcState, what: str) -> None:
        if st.canary_in_flight:
            raise ActionFailed(f"{what} of {self.target} refused: a canary takes {st.latest_percent}% of the "
                               "traffic; roll it back or promote it first", retryable=False)
        if st.raw_deployment:
            from remediation.executors_k8s import KubernetesDeployment

            dep = KubernetesDeployment(self.namespace, f"{self.name}-predictor", "kserve-container",
                                       api_client=self._client(), max_unavailable=self.max_unavailable)
            dep._check_blast_radius(dep.read(), what)

    def wait_ready(self, check: Callable[[IsvcState], bool], what: str) -> IsvcState:
        deadline = self._monotonic() + self.rollout_timeout
        while True:
            st = self.read()
            if st.observed_generation >= st.generation and st.ready and check(st):
                return st
            if self._monotonic() >= deadline:
                raise ActionFailed(f"{what} of {self.target} not Ready after {self.rollout_timeout:g}s "
                                   f"(generation {st.generation}, observed {st.observed_generation}, "
                                   f"ready {st.ready}, latest revision {st.latest_percent}%)", retryable=True)
            self._sleep(self.poll_interval)

    # --- the protocols -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        try:
            return self.read().generation
        except ActionFailed as e:
            log.warning("cannot read %s: %s", self.target, e)
            return None

    def current(self) -> str:
        return self.read().serving

    def rollback(self, to: str) -> tuple[str, str]:
        out = self.rollback_to(to)
        return out.before, out.after

    def restart(self) -> tuple[int | None, int]:
        before = self.read().generation
        self.restart_model()
        return before, self.read().generation

    # --- actions -------------------------------------------------------------------------------------
    def rollback_to(self, to: str, dry_run: bool = False) -> ServerOutcome:
        st = self.read()
        if st.serving == to:
            return ServerOutcome("rollback", True, st.serving, st.serving, dry_run=dry_run,
                                 reason=f"{to} already takes all traffic of {self.target}")
        if st.canary_percent == 0 and st.latest_percent == 0 and st.storage_uri != to:
            return ServerOutcome("rollback", True, st.serving, st.serving, dry_run=dry_run,
                                 reason=f"the canary of {self.target} is at 0%: the previously rolled-out "
                                        "revision takes all traffic")
        if st.canary_in_flight and st.storage_uri != to:
            body: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
            want: Callable[[IsvcState], bool] = lambda s: s.latest_percent == 0    # noqa: E731
            after_name = f"revision {st.previous_revision}" if st.previous_revision else to
        else:
            body = {"spec": {"predictor": {"canaryTrafficPercent": None, st.framework: {"storageUri": to}}}}
            want = lambda s: s.storage_uri == to and s.latest_percent == 100    # noqa: E731
            after_name = to
        url = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"
        req = Request("PATCH", url, body)
        if dry_run:
            return ServerOutcome("rollback", False, st.serving, after_name, dry_run=True, requests=(req,))
        self._patch("rollback", body)
        after = self.wait_ready(want, "rollback")
        log.warning("rolled %s back: %s -> %s", self.target, st.serving, after.serving)
        return ServerOutcome("rollback", False, st.serving, after.serving, requests=(req,))

    def restart_model(self, dry_run: bool = False) -> ServerOutcome:
        st = self.read()
        self._check_blast_radius(st, "rollout restart")
        stamp = rfc3339_now(self._now)
        body = {"spec": {"predictor": {"annotations": {RESTARTED_AT: stamp}}}}
        url = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"
        req = Request("PATCH", url, body)
        before = f"generation {st.generation}"
        if dry_run:
            return ServerOutcome("restart", False, before, before, dry_run=True, requests=(req,))
        self._patch("rollout restart", body)
        after = self.wait_ready(lambda s: s.restarted_at == stamp, "rollout restart")
        return ServerOutcome("restart", False, before, f"generation {after.generation}", requests=(req,))
