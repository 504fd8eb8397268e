"""KubernetesDeployment against the Kubernetes API contract.

No cluster here. The real ``kubernetes`` client talks HTTP to a small API server on 127.0.0.1 that
records every request (method, path, query, headers, body) and answers with Deployment JSON shaped like
the apps/v1 API's, including a controller that rolls out over a few polls. What a real API server would
add (admission, the ReplicaSet controller, RBAC) is not exercised; see docs/executors.md.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("kubernetes")
from kubernetes import client

from remediation.executors_k8s import RESTARTED_AT, KubernetesDeployment, RolloutState
from remediation.executors_systemd import RestartExecutor, RollbackExecutor
from remediation.types import ActionFailed

PATH_RE = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/?]+)$")
GOOD_IMAGE = "registry.example.com/ml/digits:v1"
BAD_IMAGE = "registry.example.com/ml/digits:v2"


def deployment(ns: str, name: str, image: str = BAD_IMAGE, replicas: int = 3) -> dict[str, Any]:
    """A Deployment as `kubectl get deploy -o json` shows one, after a finished rollout."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": ns, "uid": "6f0d3e0a-5b8e-4b5e-9a52-3a4f0c7e2b11",
            "resourceVersion": "184223", "generation": 4, "creationTimestamp": "2026-11-20T09:12:44Z",
            "labels": {"app": name},
            "annotations": {"deployment.kubernetes.io/revision": "4"},
        },
        "spec": {
            "replicas": replicas, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "model", "image": image, "imagePullPolicy": "IfNotPresent",
                         "ports": [{"containerPort": 8081, "protocol": "TCP"}],
                         "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                         "terminationMessagePath": "/dev/termination-log",
                         "terminationMessagePolicy": "File"},
                        {"name": "sidecar", "image": "registry.example.com/ml/incidentd:0.1.0",
                         "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                         "terminationMessagePolicy": "File"},
                    ],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler", "securityContext": {},
                },
            },
        },
        "status": {
            "observedGeneration": 4, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability.",
                 "lastUpdateTime": "2026-11-20T09:13:01Z", "lastTransitionTime": "2026-11-20T09:13:01Z"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": f'ReplicaSet "{name}-7c9f8d6b5d" has successfully progressed.',
                 "lastUpdateTime": "2026-11-22T17:40:10Z", "lastTransitionTime": "2026-11-20T09:12:44Z"},
            ],
        },
    }


def not_found(name: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'deployments.apps "{name}" not found', "reason": "NotFound",
            "details": {"name": name, "group": "apps", "kind": "deployments"}, "code": 404}


def strategic_merge(obj: dict[str, Any], patch: dict[str, Any]) -> None:
    """The subset of strategic merge the two kubectl patches use: maps merge, containers merge by name."""
    for k, v in patch.items():
        if k == "containers" and isinstance(v, list):
            by_name = {c["name"]: c for c in obj.setdefault("containers", [])}
            for c in v:
                if c["name"] in by_name:
                    by_name[c["name"]].update(c)
                else:
                    obj["containers"].append(c)
        elif isinstance(v, dict) and isinstance(obj.get(k), dict):
            strategic_merge(obj[k], v)
        else:
            obj[k] = copy.deepcopy(v)


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAPI:
    """Deployments by (namespace, name); a rollout takes ``rollout_polls`` GETs after a spec change."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    rollout_polls: int = 2
    stuck: bool = False
    _pending: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, key: tuple[str, str]) -> None:
        d = self.objects[key]
        left = self._pending.get(key)
        if left is None:
            return
        st, want = d["status"], d["spec"]["replicas"]
        if left == self.rollout_polls:          # controller observed the new spec, new RS scaled to 1
            st["observedGeneration"] = d["metadata"]["generation"]
            st["updatedReplicas"], st["replicas"], st["availableReplicas"] = 1, want + 1, want
            prog = st["conditions"][1]
            prog.update(reason="ReplicaSetUpdated", message="ReplicaSet is progressing.")
            if self.stuck:
                prog.update(status="False", reason="ProgressDeadlineExceeded",
                            message=f'ReplicaSet "{key[1]}-5d4c" has timed out progressing.')
                del self._pending[key]
                return
        left -= 1
        if left <= 0:
            st.update(replicas=want, updatedReplicas=want, readyReplicas=want, availableReplicas=want)
            st["conditions"][1].update(reason="NewReplicaSetAvailable")
            del self._pending[key]
        else:
            self._pending[key] = left

    def handle(self, req: Request) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(req)
            m = PATH_RE.match(req.path)
            if not m:
                return 404, {"kind": "Status", "code": 404, "status": "Failure", "message": "not found"}
            key = (m.group(1), m.group(2))
            if key not in self.objects:
                return 404, not_found(key[1])
            d = self.objects[key]
            if req.method == "GET":
                self.advance(key)
                return 200, d
            if req.method == "PATCH":
                if req.headers.get("content-type") != "application/strategic-merge-patch+json":
                    return 415, {"kind": "Status", "code": 415, "message": "unsupported patch type"}
                spec_before = json.dumps(d["spec"], sort_keys=True)
                strategic_merge(d, req.body)
                if json.dumps(d["spec"], sort_keys=True) != spec_before:
                    d["metadata"]["generation"] += 1
                    d["metadata"]["resourceVersion"] = str(int(d["metadata"]["resourceVersion"]) + 1)
                    self._pending[key] = self.rollout_polls
                return 200, d
            return 405, {"kind": "Status", "code": 405, "message": "method not allowed"}


@pytest.fixture()
def api() -> Iterator[tuple[FakeAPI, str]]:
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            path, _, query = self.path.partition("?")
            req = Request(self.command, path, query, {k.lower(): v for k, v in self.headers.items()},
                          json.loads(raw) if raw else None)
            code, body = fake.handle(req)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make(url: str, ns: str = "ml", name: str = "digits", container: str = "model", **kw: Any
         ) -> KubernetesDeployment:
    cfg = client.Configuration()
    cfg.host = url
    fixed = dt.datetime(2026, 11, 23, 6, 30, 5, tzinfo=dt.UTC)
    return KubernetesDeployment(ns, name, container, api_client=client.ApiClient(cfg), poll_interval=0.0,
                                sleep=lambda s: None, now=lambda: fixed, **kw)


PATH = "/apis/apps/v1/namespaces/ml/deployments/digits"


def test_rollout_restart_sends_kubectls_patch_and_waits(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    dep = make(url)
    assert dep.restart() == (4, 5)
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 1
    (p,) = patches
    assert p.path == PATH
    assert p.headers["content-type"] == "application/strategic-merge-patch+json"
    assert p.body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-23T06:30:05Z"}}}}}
    # then polled GET until observedGeneration == generation and all replicas updated and available
    after = [r.method for r in fake.requests[fake.requests.index(p) + 1:]]
    assert after and set(after) == {"GET"} and len(after) >= 2
    st = fake.objects[("ml", "digits")]
    assert st["status"]["observedGeneration"] == 5 and st["status"]["updatedReplicas"] == 3
    # the rest of the object is untouched: both containers and their images stay
    assert [c["image"] for c in st["spec"]["template"]["spec"]["containers"]] == [
        BAD_IMAGE, "registry.example.com/ml/incidentd:0.1.0"]


def test_restart_is_a_noop_when_the_generation_moved_since_the_plan(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    dep = make(url)
    planned = dep.pid
    assert planned == 4
    first = dep.restart_once(planned)
    again = dep.restart_once(planned)            # a retried request with the same plan
    assert not first.noop and again.noop and "since the plan" in again.reason
    assert sum(r.method == "PATCH" for r in fake.requests) == 1


def test_set_image_rolls_back_to_known_good_once(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    dep = make(url)
    assert dep.current() == BAD_IMAGE
    assert dep.rollback(GOOD_IMAGE) == (BAD_IMAGE, GOOD_IMAGE)
    (p,) = [r for r in fake.requests if r.method == "PATCH"]
    assert p.path == PATH and p.headers["content-type"] == "application/strategic-merge-patch+json"
    assert p.body == {"spec": {"template": {"spec": {"containers": [{"name": "model", "image": GOOD_IMAGE}]}}}}
    containers = fake.objects[("ml", "digits")]["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("model", GOOD_IMAGE), ("sidecar", "registry.example.com/ml/incidentd:0.1.0")]
    assert containers[0]["ports"] == [{"containerPort": 8081, "protocol": "TCP"}]
    # already on the known-good image: no PATCH at all
    assert dep.rollback(GOOD_IMAGE) == (GOOD_IMAGE, GOOD_IMAGE)
    assert sum(r.method == "PATCH" for r in fake.requests) == 1


def test_only_the_named_deployment_is_touched(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    fake.objects[("ml", "digits-canary")] = deployment("ml", "digits-canary")
    fake.objects[("other", "digits")] = deployment("other", "digits")
    make(url).restart()
    assert {r.path for r in fake.requests} == {PATH}
    assert all(r.query in ("",) for r in fake.requests)          # no labelSelector, no list calls
    assert fake.objects[("ml", "digits-canary")]["metadata"]["generation"] == 4
    assert fake.objects[("other", "digits")]["metadata"]["generation"] == 4


@pytest.mark.parametrize("ns, name, container", [
    ("ml", "", "model"), ("ml", "*", "model"), ("", "digits", "model"), ("*", "digits", "model"),
    ("ml", "app=digits", "model"), ("ml", "digits,other", "model"), ("ml", "Digits", "model"),
    ("ml", "digits", ""), ("ml", "digits", "*"), ("ml", "-l app", "model"), ("ml", "../digits", "model"),
])
def test_blast_radius_names_are_validated(ns: str, name: str, container: str) -> None:
    with pytest.raises(ValueError):
        KubernetesDeployment(ns, name, container, api_client=client.ApiClient(client.Configuration()))


def test_unknown_container_is_refused_before_any_patch(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    with pytest.raises(ActionFailed, match="has no container 'modle'"):
        make(url, container="modle").rollback(GOOD_IMAGE)
    assert not any(r.method == "PATCH" for r in fake.requests)


def test_bad_image_reference_refused() -> None:
    dep = KubernetesDeployment("ml", "digits", "model", api_client=client.ApiClient(client.Configuration()))
    for image in ("", "reg/img:v1 --all", "*"):
        with pytest.raises(ValueError):
            dep.set_image(image)


def test_missing_deployment_is_a_clear_non_retryable_failure(api: tuple[FakeAPI, str]) -> None:
    _, url = api
    with pytest.raises(ActionFailed, match="deployment ml/digits not found") as ei:
        make(url).restart()
    assert not ei.value.retryable


def test_paused_deployment_is_not_restarted(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    d = deployment("ml", "digits")
    d["spec"]["paused"] = True
    fake.objects[("ml", "digits")] = d
    with pytest.raises(ActionFailed, match="paused"):
        make(url).restart()
    assert not any(r.method == "PATCH" for r in fake.requests)


def test_progress_deadline_exceeded_fails_the_rollout(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    fake.stuck = True
    with pytest.raises(ActionFailed, match="progress deadline") as ei:
        make(url).rollback(GOOD_IMAGE)
    assert not ei.value.retryable


def test_rollout_that_never_finishes_times_out(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    fake.rollout_polls = 10_000
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += 1.0

    dep = make(url, rollout_timeout=3.0)
    dep._sleep, dep._monotonic = sleep, lambda: clock[0]
    with pytest.raises(ActionFailed, match="not finished after 3.0s") as ei:
        dep.restart()
    assert ei.value.retryable


def test_unreachable_api_is_retryable() -> None:
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"        # discard port: connection refused
    cfg.retries = 0
    dep = KubernetesDeployment("ml", "digits", "model", api_client=client.ApiClient(cfg), request_timeout=2)
    with pytest.raises(ActionFailed, match="unreachable") as ei:
        dep.restart()
    assert ei.value.retryable
    assert dep.pid is None


@pytest.mark.parametrize("status, done, msg", [
    ({"generation": 5, "observed_generation": 4}, False, "spec update to be observed"),
    ({"updated_replicas": 1}, False, "1 out of 3 new replicas have been updated"),
    ({"status_replicas": 4}, False, "1 old replicas are pending termination"),
    ({"available_replicas": 2}, False, "2 of 3 updated replicas are available"),
    ({}, True, "successfully rolled out"),
])
def test_rollout_status_logic_matches_kubectl(status: dict[str, int], done: bool, msg: str) -> None:
    base: dict[str, Any] = {
        "generation": 5, "observed_generation": 5, "replicas": 3, "status_replicas": 3, "updated_replicas": 3,
        "available_replicas": 3, "progress_deadline_exceeded": False, "paused": False, "restarted_at": None,
        "images": {"model": GOOD_IMAGE}}
    ok, text = RolloutState(**{**base, **status}).done()
    assert (ok, msg in text) == (done, True)


def test_protocols(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    dep = make(url)
    assert isinstance(dep, RestartExecutor) and isinstance(dep, RollbackExecutor)
    assert dep.command == ["kubectl", "--namespace", "ml", "rollout", "restart", "deployment/digits"]


def test_actions_restart_and_roll_back_through_the_deployment(api: tuple[FakeAPI, str], registry_dir) -> None:
    """The Restart and Rollback actions, configured for Kubernetes, act on the Deployment: the known-good
    version comes from the model registry (via the server's admin API), the image from the template."""
    from remediation.actions import ACTIONS, ActionContext
    from remediation.executors import ModelServerAdmin
    from remediation.types import ActionKind
    from tests.model_server.conftest import start_server

    fake, url = api
    fake.objects[("ml", "digits")] = deployment("ml", "digits")
    server = start_server(registry_dir)
    try:
        dep = make(url)
        ctx = ActionContext(ModelServerAdmin(server.url), dep, rollout=dep,
                            release_template="registry.example.com/ml/digits:{version}")
        rollback = ACTIONS[ActionKind.ROLLBACK]
        plan = rollback.plan(ctx, "digits")
        assert not plan.noop and plan.params["to"] == GOOD_IMAGE and plan.params["from"] == BAD_IMAGE
        assert rollback.simulate(ctx, plan) == {"would_switch": {"from": BAD_IMAGE, "to": GOOD_IMAGE}}
        assert not any(r.method == "PATCH" for r in fake.requests), "a dry run sends no PATCH"
        result = rollback.execute(ctx, plan)
        assert result == {"noop": False, "from": BAD_IMAGE, "to": GOOD_IMAGE}
        assert rollback.execute(ctx, plan)["noop"] is True, "a retried rollback does not apply twice"
        assert rollback.plan(ctx, "digits").noop
        rollback.revert(ctx, plan, result)                 # what a regression after the rollback triggers
        assert dep.current() == BAD_IMAGE
        restart = ACTIONS[ActionKind.RESTART]
        rplan = restart.plan(ctx, "digits")
        assert rplan.params["pid"] == dep.pid and "rollout restart deployment/digits" in rplan.description
        first = restart.execute(ctx, rplan)
        assert first["noop"] is False and restart.execute(ctx, rplan)["noop"] is True
        assert sum(r.method == "PATCH" for r in fake.requests) == 3    # set image, set image back, restart
    finally:
        server.stop()


@pytest.mark.parametrize("strategy,replicas,limit,refused", [
    ({"type": "Recreate"}, 3, 1, True),                                                  # all at once
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "50%"}}, 4, 1, True),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 2}}, 5, 2, False),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}, 3, 1, False),
    ({"type": "Recreate"}, 1, 1, False),                                                 # one replica is one
])
def test_blast_radius_one_replica_at_a_time(api: tuple[FakeAPI, str], strategy: dict[str, Any], replicas: int,
                                            limit: int, refused: bool) -> None:
    fake, url = api
    obj = deployment("ml", "digits", replicas=replicas)
    obj["spec"]["strategy"] = strategy
    fake.objects[("ml", "digits")] = obj
    dep = make(url, max_unavailable=limit)
    if refused:
        with pytest.raises(ActionFailed, match="replicas down at once") as e:
            dep.restart()
        assert not e.value.retryable
        with pytest.raises(ActionFailed, match="replicas down at once"):
            dep.rollback(GOOD_IMAGE)
        assert not any(r.method == "PATCH" for r in fake.requests), "refused before any change"
    else:
        dep.restart()
        assert sum(r.method == "PATCH" for r in fake.requests) == 1
