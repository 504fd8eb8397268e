"""Restart or roll back exactly one Kubernetes Deployment through the official ``kubernetes`` client.

The requests are the ones kubectl sends, so what incidentd does reads like what a person would type:

- restart = ``kubectl rollout restart deployment/NAME``: a strategic-merge PATCH setting
  ``spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`` to an RFC 3339 time;
- rollback = ``kubectl set image deployment/NAME CONTAINER=IMAGE`` to the known-good image: a
  strategic-merge PATCH of ``spec.template.spec.containers[name=CONTAINER].image`` (no-op when the
  container already runs that image);
- then ``kubectl rollout status``: poll the Deployment until ``status.observedGeneration`` reaches
  ``metadata.generation`` and the updated replicas are all there and available.

Blast radius: one namespace, one Deployment named exactly, one container; no empty names, no ``*``, no
label selectors; a container that the Deployment does not have is refused (a strategic merge would add
it).

    >>> dep = KubernetesDeployment("ml", "digits", "model")     # in-cluster config, else ~/.kube/config
    >>> old_gen, new_gen = dep.restart()                        # the LocalProcess-compatible form
    >>> dep.rollback("registry.example.com/digits:v1")          # -> (old image, new image)
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remediation.types import ActionFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]*$")


def _check_name(kind: str, value: str, pattern: re.Pattern[str], max_len: int) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must name exactly one object, got an empty name")
    if "*" in value or any(c in value for c in "=!,() "):
        raise ValueError(f"{kind} {value!r}: wildcards and label selectors are refused; name exactly one")
    if len(value) > max_len or not pattern.match(value):
        raise ValueError(f"{kind} {value!r} is not a valid Kubernetes name (RFC 1123, at most {max_len})")
    return value


def validate_image(image: str) -> str:
    if not isinstance(image, str) or not image or not _IMAGE.match(image) or len(image) > 4096:
        raise ValueError(f"image {image!r} is not a valid image reference")
    return image


def rfc3339_now(now: Callable[[], dt.datetime] | None = None) -> str:
    """What kubectl writes into restartedAt (Go's time.RFC3339); UTC prints as ...Z."""
    t = (now or (lambda: dt.datetime.now(dt.UTC)))()
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RolloutState:
    """The parts of a Deployment that ``kubectl rollout status`` looks at."""

    generation: int
    observed_generation: int
    replicas: int | None             # spec.replicas
    status_replicas: int
    updated_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool
    paused: bool
    restarted_at: str | None
    images: dict[str, str]           # container name -> image
    down_at_once: int = 0            # replicas a rollout may take down at once (Recreate: all of them)

    def done(self) -> tuple[bool, str]:
        """kubectl's DeploymentStatusViewer: (finished, message); raises when the deadline passed."""
        if self.generation <= self.observed_generation:
            if self.progress_deadline_exceeded:
                raise ActionFailed("rollout exceeded its progress deadline", retryable=False)
            if self.replicas is not None and self.updated_replicas < self.replicas:
                return False, (f"{self.updated_replicas} out of {self.replicas} new replicas have been "
                               "updated")
            if self.status_replicas > self.updated_replicas:
                return False, f"{self.status_replicas - self.updated_replicas} old replicas are pending termination"
            if self.available_replicas < self.updated_replicas:
                return False, (f"{self.available_replicas} of {self.updated_replicas} updated replicas are "
                               "available")
            return True, "successfully rolled out"
        return False, "waiting for deployment spec update to be observed"


def rollout_state(d: Any) -> RolloutState:
    """Read a ``V1Deployment`` (the client's model) into a RolloutState."""
    status = d.status
    conds = (status.conditions or []) if status else []
    exceeded = any(c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in conds)
    tmpl = d.spec.template
    ann = (tmpl.metadata.annotations or {}) if tmpl.metadata else {}
    return RolloutState(
        generation=int(d.metadata.generation or 0),
        observed_generation=int((status.observed_generation if status else None) or 0),
        replicas=d.spec.replicas,
        status_replicas=int((status.replicas if status else None) or 0),
        updated_replicas=int((status.updated_replicas if status else None) or 0),
        available_replicas=int((status.available_replicas if status else None) or 0),
        progress_deadline_exceeded=exceeded,
        paused=bool(d.spec.paused),
        restarted_at=ann.get(RESTARTED_AT),
        images={c.name: c.image for c in tmpl.spec.containers},
        down_at_once=_down_at_once(d.spec.strategy, d.spec.replicas),
    )


def _down_at_once(strategy: Any, replicas: int | None) -> int:
    """Replicas a rollout of this strategy takes down together, as the Deployment controller resolves it."""
    n = 1 if replicas is None else int(replicas)
    if strategy is not None and strategy.type == "Recreate":
        return n
    ru = strategy.rolling_update if strategy is not None else None
    value = ru.max_unavailable if ru is not None and ru.max_unavailable is not None else "25%"
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(n * float(value[:-1]) / 100.0)    # maxUnavailable rounds down
    return int(value)


@dataclass(frozen=True, slots=True)
class RolloutOutcome:
    noop: bool
    before: RolloutState
    after: RolloutState
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"noop": self.noop, "reason": self.reason, "old_generation": self.before.generation,
                "new_generation": self.after.generation, "restarted_at": self.after.restarted_at,
                "old_images": self.before.images, "new_images": self.after.images}


class KubernetesDeployment:
    """One Deployment, one container. ``api_client`` defaults to in-cluster config, then kubeconfig.

        >>> from kubernetes import client
        >>> cfg = client.Configuration(); cfg.host = "https://10.0.0.1:6443"
        >>> KubernetesDeployment("ml", "digits", "model", api_client=client.ApiClient(cfg)).command
        ['kubectl', '--namespace', 'ml', 'rollout', 'restart', 'deployment/digits']
    """

    def __init__(self, namespace: str, name: str, container: str, api_client: ApiClient | None = None,
                 rollout_timeout: float = 300.0, poll_interval: float = 2.0, request_timeout: float = 30.0,
                 max_unavailable: int = 1,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], dt.datetime] | None = None) -> None:
        self.namespace = _check_name("namespace", namespace, _DNS1123_LABEL, 63)
        self.name = _check_name("deployment", name, _DNS1123_SUBDOMAIN, 253)
        self.container = _check_name("container", container, _DNS1123_LABEL, 63)
        self._api_client = api_client
        self._apps: Any = None
        if max_unavailable < 1:
            raise ValueError("max_unavailable must be at least 1")
        self.max_unavailable = max_unavailable
        self.rollout_timeout = rollout_timeout
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self._sleep = sleep
        self._monotonic = monotonic
        self._now = now

    @property
    def target(self) -> str:
        return f"deployment/{self.name} -n {self.namespace} -c {self.container}"

    @property
    def command(self) -> list[str]:
        return ["kubectl", "--namespace", self.namespace, "rollout", "restart", f"deployment/{self.name}"]

    # --- API access ---------------------------------------------------------------------------------
    def _api(self) -> Any:
        if self._apps is None:
            from kubernetes import client, config

            api_client = self._api_client
            if api_client is None:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped library
                except config.ConfigException:
                    config.load_kube_config()  # type: ignore[no-untyped-call]
                api_client = client.ApiClient()
            self._apps = client.AppsV1Api(api_client)
        return self._apps

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(name=self.name, namespace=self.namespace, _request_timeout=self.request_timeout, **kwargs)
        except ApiException as e:
            where = f"deployment {self.namespace}/{self.name}"
            if e.status == 404:
                raise ActionFailed(f"{what}: {where} not found", retryable=False) from e
            retry = e.status in (409, 429) or (e.status or 0) >= 500
            raise ActionFailed(f"{what} {where} answered {e.status} {e.reason}", retryable=retry) from e
        except HTTPError as e:
            raise ActionFailed(f"{what}: the Kubernetes API is unreachable: {e}", retryable=True) from e

    def read(self) -> RolloutState:
        d = self._call("read", self._api().read_namespaced_deployment)
        if d.metadata.name != self.name or d.metadata.namespace not in (None, self.namespace):
            raise ActionFailed(f"API answered for {d.metadata.namespace}/{d.metadata.name}, not "
                               f"{self.namespace}/{self.name}", retryable=False)
        state = rollout_state(d)
        if self.container not in state.images:
            raise ActionFailed(f"deployment {self.namespace}/{self.name} has no container {self.container!r} "
                               f"(containers: {sorted(state.images)})", retryable=False)
        return state

    def _check_blast_radius(self, state: RolloutState, what: str) -> None:
        """Refuse a rollout that would take more replicas down at once than allowed (Recreate, a big
        maxUnavailable): remediation replaces one replica at a time or not at all."""
        if state.down_at_once > self.max_unavailable:
            raise ActionFailed(f"{what} of deployment {self.namespace}/{self.name} refused: its strategy takes "
                               f"{state.down_at_once} of {state.replicas} replicas down at once (limit "
                               f"{self.max_unavailable}); use RollingUpdate with maxUnavailable <= "
                               f"{self.max_unavailable}", retryable=False)

    def _patch(self, what: str, body: dict[str, Any]) -> RolloutState:
        d = self._call(what, self._api().patch_namespaced_deployment, body=body)
        return rollout_state(d)

    # --- the protocols -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The Deployment's metadata.generation: it changes with every restart or image change."""
        try:
            return self.read().generation
        except ActionFailed as e:
            log.warning("cannot read %s: %s", self.target, e)
            return None

    def current(self) -> str:
        return self.read().images[self.container]

    def restart(self) -> tuple[int | None, int]:
        """``kubectl rollout restart`` then wait for the rollout; returns (old, new) generation."""
        out = self.restart_once()
        return out.before.generation, out.after.generation

    def rollback(self, to: str) -> tuple[str, str]:
        """Set the container's image to the known-good ``to`` and wait; (old, new) image, equal when no-op."""
        out = self.set_image(to)
        return out.before.images[self.container], out.after.images[self.container]

    # --- actions -------------------------------------------------------------------------------------
    def restart_body(self, restarted_at: str) -> dict[str, Any]:
        return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}

    def set_image_body(self, image: str) -> dict[str, Any]:
        return {"spec": {"template": {"spec": {"containers": [{"name": self.container, "image": image}]}}}}

    def restart_once(self, planned_generation: int | None = None) -> RolloutOutcome:
        """Restart unless the Deployment changed since the plan (its generation moved): then no-op."""
        before = self.read()
        if planned_generation is not None and before.generation != planned_generation:
            return RolloutOutcome(True, before, before, f"generation moved {planned_generation} -> "
                                  f"{before.generation} since the plan")
        if before.paused:
            raise ActionFailed(f"deployment {self.namespace}/{self.name} is paused: can't restart a paused "
                               "deployment (run rollout resume first)", retryable=False)
        self._check_blast_radius(before, "rollout restart")
        self._patch("rollout restart", self.restart_body(rfc3339_now(self._now)))
        after = self.wait_rollout()
        log.warning("rollout restart of %s: generation %d -> %d", self.target, before.generation,
                    after.generation)
        return RolloutOutcome(False, before, after)

    def set_image(self, image: str) -> RolloutOutcome:
        image = validate_image(image)
        before = self.read()
        if before.images[self.container] == image:
            return RolloutOutcome(True, before, before, f"{self.container} already runs {image}")
        self._check_blast_radius(before, "set image")
        self._patch("set image", self.set_image_body(image))
        after = self.wait_rollout()
        log.warning("set image of %s: %s -> %s", self.target, before.images[self.container], image)
        return RolloutOutcome(False, before, after)

    def wait_rollout(self) -> RolloutState:
        """Poll like ``kubectl rollout status`` until done; ActionFailed on deadline or timeout."""
        deadline = self._monotonic() + self.rollout_timeout
        while True:
            state = self.read()
            finished, msg = state.done()
            if finished:
                return state
            if self._monotonic() >= deadline:
                raise ActionFailed(f"rollout of {self.target} not finished after {self.rollout_timeout}s: {msg}",
                                   retryable=True)
            log.info("waiting for rollout of %s: %s", self.target, msg)
            self._sleep(self.poll_interval)
