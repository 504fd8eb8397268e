"""KServeInferenceService against the Kubernetes API contract for ``serving.kserve.io/v1beta1``.

No cluster here. The real ``kubernetes`` client talks HTTP to a small API server on 127.0.0.1 that
records every request and answers with InferenceService JSON shaped like KServe's, including a
controller that reconciles a spec change over a poll (new revision, traffic split by
``canaryTrafficPercent``, ``previousRolledoutRevision``). What KServe and Knative really do underneath
(revisions, routes, the ReplicaSet controller) is not exercised.
"""
from __future__ import annotations

import copy
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

from remediation.executors_kserve import KServeInferenceService, isvc_state
from remediation.executors_systemd import RestartExecutor, RollbackExecutor
from remediation.types import ActionFailed
from tests.remediation.test_executors_k8s import deployment

ISVC = re.compile(r"^/apis/serving.kserve.io/v1beta1/namespaces/([^/]+)/inferenceservices/([^/?]+)$")
DEP = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/?]+)$")
GOOD, BAD = "gs://models/digits/v1", "gs://models/digits/v2"


def inference_service(ns: str, name: str, uri: str = GOOD) -> dict[str, Any]:
    """An InferenceService as ``kubectl get isvc -o json`` shows one, rolled out and Ready."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns, "generation": 3, "resourceVersion": "5121",
                     "annotations": {}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}},
        "status": {
            "observedGeneration": 3,
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "components": {"predictor": {
                "latestCreatedRevision": f"{name}-predictor-00003", "latestReadyRevision": f"{name}-predictor-00003",
                "latestRolledoutRevision": f"{name}-predictor-00003",
                "traffic": [{"revisionName": f"{name}-predictor-00003", "percent": 100, "latestRevision": True}],
            }},
        },
    }


def merge_patch(obj: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for k, v in patch.items():
        if v is None:
            obj.pop(k, None)
        elif isinstance(v, dict) and isinstance(obj.get(k), dict):
            merge_patch(obj[k], v)
        else:
            obj[k] = copy.deepcopy(v)


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAPI:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Req] = field(default_factory=list)
    never_ready: bool = False
    pending: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reconcile(self, path: str) -> None:
        """What KServe does after a spec change: a new revision, traffic by canaryTrafficPercent."""
        if path not in self.pending or self.never_ready:
            return
        self.pending.discard(path)
        d = self.objects[path]
        comp = d["status"]["components"]["predictor"]
        pred = d["spec"]["predictor"]
        rolled = comp["latestRolledoutRevision"]
        revision_changed = json.dumps(pred, sort_keys=True) != comp.get("_spec")
        if revision_changed:
            n = int(comp["latestCreatedRevision"].rsplit("-", 1)[1]) + 1
            new = f"{d['metadata']['name']}-predictor-{n:05d}"
            comp.update(latestCreatedRevision=new, latestReadyRevision=new)
        latest = comp["latestReadyRevision"]
        pct = pred.get("canaryTrafficPercent")
        if pct is None or pct == 100 or latest == rolled:
            comp["traffic"] = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
            comp["previousRolledoutRevision"] = rolled if latest != rolled else comp.get("previousRolledoutRevision")
            comp["latestRolledoutRevision"] = latest
        else:
            comp["traffic"] = [{"revisionName": latest, "percent": pct, "latestRevision": True},
                               {"revisionName": rolled, "percent": 100 - pct, "latestRevision": False}]
            comp["previousRolledoutRevision"] = rolled
        comp["_spec"] = json.dumps({k: v for k, v in pred.items() if k != "canaryTrafficPercent"}, sort_keys=True)
        d["status"]["observedGeneration"] = d["metadata"]["generation"]
        for c in d["status"]["conditions"]:
            c["status"] = "True"

    def handle(self, req: Req) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(req)
            if not (ISVC.match(req.path) or DEP.match(req.path)) or req.path not in self.objects:
                return 404, {"kind": "Status", "code": 404, "status": "Failure", "reason": "NotFound",
                             "message": f"{req.path} not found"}
            d = self.objects[req.path]
            if req.method == "GET":
                self.reconcile(req.path)
                return 200, d
            if req.method == "PATCH":
                if req.headers.get("content-type") != "application/merge-patch+json":
                    return 415, {"kind": "Status", "code": 415, "message": "unsupported patch type"}
                if "storageUri" in json.dumps(req.body) and "forbidden" in json.dumps(req.body):
                    return 422, {"kind": "Status", "code": 422, "status": "Failure", "reason": "Invalid",
                                 "message": 'admission webhook "inferenceservice.kserve-webhook-server.validator" '
                                            'denied the request: storageUri scheme not supported'}
                before = json.dumps(d["spec"], sort_keys=True)
                merge_patch(d, req.body)
                if json.dumps(d["spec"], sort_keys=True) != before:
                    d["metadata"]["generation"] += 1
                    for c in d["status"]["conditions"]:
                        c["status"] = "Unknown"
                    self.pending.add(req.path)
                return 200, d
            return 405, {"kind": "Status", "code": 405, "message": "method not allowed"}


@pytest.fixture()
def api() -> Iterator[tuple[FakeAPI, str]]:
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            req = Req(self.command, self.path.partition("?")[0], {k.lower(): v for k, v in self.headers.items()},
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


def isvc_at(url: str, name: str = "digits", **kw: Any) -> KServeInferenceService:
    cfg = client.Configuration()
    cfg.host = url
    return KServeInferenceService("ml", name, api_client=client.ApiClient(cfg), poll_interval=0.01,
                                  rollout_timeout=kw.pop("rollout_timeout", 5.0), sleep=lambda s: None, **kw)


def path(name: str = "digits") -> str:
    return f"/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/{name}"


def patches(fake: FakeAPI) -> list[Any]:
    return [r.body for r in fake.requests if r.method == "PATCH"]


def test_is_both_executor_kinds(api: tuple[FakeAPI, str]) -> None:
    ex = isvc_at(api[1])
    assert isinstance(ex, RestartExecutor) and isinstance(ex, RollbackExecutor)


def test_rollback_restores_the_previous_storage_uri(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[path()] = inference_service("ml", "digits", BAD)
    ex = isvc_at(url)
    assert ex.current() == BAD
    dry = ex.rollback_to(GOOD, dry_run=True)
    assert dry.dry_run and patches(fake) == [] and ex.current() == BAD
    out = ex.rollback_to(GOOD)
    assert (out.before, out.after, out.noop) == (BAD, GOOD, False)
    assert patches(fake) == [{"spec": {"predictor": {"canaryTrafficPercent": None,
                                                     "model": {"storageUri": GOOD}}}}]
    st = ex.read()
    assert st.ready and st.storage_uri == GOOD and st.latest_percent == 100
    assert ex.rollback_to(GOOD).noop and len(patches(fake)) == 1


def test_rollback_of_a_canary_sends_its_traffic_to_zero(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[path()] = inference_service("ml", "digits", GOOD)
    ex = isvc_at(url)
    # A canary of the bad model takes 20% (what a deploy would do).
    ex._patch("deploy", {"spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": BAD}}}})
    st = ex.wait_ready(lambda s: s.canary_in_flight, "deploy")
    assert st.latest_percent == 20 and ex.current() == f"{BAD} (canary 20%)"
    out = ex.rollback_to(GOOD)
    assert patches(fake)[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    st = ex.read()
    assert st.latest_percent == 0 and out.after == f"revision {st.previous_revision}"
    assert st.previous_revision == "digits-predictor-00003"
    n = len(patches(fake))
    assert ex.rollback_to(GOOD).noop and len(patches(fake)) == n


def test_restart_is_a_rollout_and_refused_during_a_canary(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[path()] = inference_service("ml", "digits", GOOD)
    ex = isvc_at(url)
    assert ex.restart_model(dry_run=True).dry_run and patches(fake) == []
    old, new = ex.restart()
    assert old is not None and new == old + 1
    ann = patches(fake)[-1]["spec"]["predictor"]["annotations"]
    assert list(ann) == ["kubectl.kubernetes.io/restartedAt"] and ex.read().restarted_at == ann[
        "kubectl.kubernetes.io/restartedAt"]
    ex._patch("deploy", {"spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": BAD}}}})
    ex.wait_ready(lambda s: s.canary_in_flight, "deploy")
    with pytest.raises(ActionFailed, match=r"rollout restart of inferenceservice/digits -n ml refused: a canary "
                                           r"takes 10% of the traffic"):
        ex.restart()


def test_raw_deployment_keeps_the_blast_radius_guard(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    obj = inference_service("ml", "digits", GOOD)
    obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    fake.objects[path()] = obj
    dep = deployment("ml", "digits-predictor", replicas=4)
    dep["spec"]["template"]["spec"]["containers"][0]["name"] = "kserve-container"
    dep["spec"]["strategy"] = {"type": "Recreate"}
    fake.objects["/apis/apps/v1/namespaces/ml/deployments/digits-predictor"] = dep
    with pytest.raises(ActionFailed, match=r"takes 4 of 4 replicas down at once \(limit 1\)"):
        isvc_at(url).restart_model()
    assert patches(fake) == []


def test_refusals_are_named(api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    fake.objects[path()] = inference_service("ml", "digits", BAD)
    with pytest.raises(ActionFailed, match=r"refused with 422 .*denied the request: storageUri scheme not supported"):
        isvc_at(url).rollback_to("forbidden://x")
    with pytest.raises(ActionFailed, match=r"read: inferenceservice ml/other not found"):
        isvc_at(url, "other").current()
    fake.never_ready = True
    with pytest.raises(ActionFailed, match=r"rollback of inferenceservice/digits -n ml not Ready after 0s \(generation 4, observed 3"):
        isvc_at(url, rollout_timeout=0.0).rollback_to(GOOD)


@pytest.mark.parametrize("name", ["", "*", "a,b", "app=digits", "UPPER"])
def test_one_named_service_only(name: str) -> None:
    with pytest.raises(ValueError, match="inferenceservice"):
        KServeInferenceService("ml", name)


def test_state_of_the_older_framework_form() -> None:
    obj = inference_service("ml", "x")
    obj["spec"]["predictor"] = {"sklearn": {"storageUri": GOOD}}
    st = isvc_state(obj)
    assert (st.framework, st.storage_uri, st.serving) == ("sklearn", GOOD, GOOD)
