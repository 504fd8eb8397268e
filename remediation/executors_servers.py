"""What the executors of third-party model servers share: the HTTP call that names a refusal, the outcome
of one action, incidentd's own record of each model's known-good version, and the adapter that lets the
existing actions (rollback, restart; remediation.actions) drive them.

A third-party server (MLServer, Triton, TorchServe, KServe) has no notion of a "known-good" version, so
incidentd keeps it: :class:`KnownGoodTracker` writes, per server kind and model, which version is known
good, since when and why (a verified action, a version that served without an incident for
``promote_after`` seconds, or an operator's setting) into the store's key/value table.

    >>> ex = MLServerRepository("http://127.0.0.1:8080", "tiny", repository_dir="/models")
    >>> tracker = KnownGoodTracker(store, "mlserver", "tiny", promote_after=600)
    >>> admin = ServerControlAdmin(ex, tracker, active=lambda: store.models_with_active_incidents())
    >>> ctx = ActionContext(admin, process=ex, rollout=ex, release_template="{version}")
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from remediation.executors import ModelServerAdmin
from remediation.types import ActionFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    """One request an executor sends (or, in a dry run, would send) to the server's control API."""

    method: str
    url: str
    body: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, **({"body": self.body} if self.body is not None else {})}


@dataclass(frozen=True, slots=True)
class ServerOutcome:
    """What one rollback or restart did: the state read back before and after, and the requests."""

    action: str
    noop: bool
    before: str
    after: str
    dry_run: bool = False
    reason: str = ""
    requests: tuple[Request, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "noop": self.noop, "dry_run": self.dry_run, "before": self.before,
                "after": self.after, "reason": self.reason, "requests": [r.to_dict() for r in self.requests]}


class HttpControl:
    """A server's control API over HTTP: every answer >= 400 becomes an ActionFailed that names the server,
    the request and what the server said (the refusal ends up in the action's audit record)."""

    server = "model server"

    def __init__(self, base_url: str, timeout: float = 30.0, token: str | None = None,
                 headers: dict[str, str] | None = None):
        if not base_url or "*" in base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{self.server} URL must be one http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # ``token``: a bearer token; ``headers``: e.g. Triton's restricted-API header
        # (``--http-restricted-api=model-repository:triton-access-token=SECRET``).
        self.headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}

    def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
                ok: Iterable[int] = ()) -> httpx.Response:
        """Send one request; a status in ``ok`` is returned even when >= 400 (e.g. a 404 that means 'no')."""
        url = self.base_url + path
        try:
            with httpx.Client(timeout=self.timeout, headers=self.headers) as c:
                r = c.request(method, url, json=json, params=params)
        except httpx.HTTPError as e:
            raise ActionFailed(f"{self.server} at {self.base_url} unreachable for {method} {path}: {e}",
                               retryable=True) from e
        if r.status_code >= 400 and r.status_code not in set(ok):
            raise ActionFailed(f"{self.server} refused {method} {path}{_query(params)}: {r.status_code} "
                               f"{_said(r)}", retryable=r.status_code >= 500 or r.status_code == 429)
        return r

    def json(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        r = self.request(method, path, json=json, params=params)
        try:
            return r.json()
        except ValueError as e:
            raise ActionFailed(f"{self.server} answered {method} {path} with non-JSON: {r.text[:200]!r}") from e


def _query(params: dict[str, Any] | None) -> str:
    return ("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else ""


def _said(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:300]


def wait_for(check: Callable[[], bool], what: str, timeout: float, interval: float = 0.2,
             sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Poll ``check`` until it holds; ActionFailed naming ``what`` after ``timeout`` seconds."""
    deadline = monotonic() + timeout
    while not check():
        if monotonic() >= deadline:
            raise ActionFailed(f"{what} not reached within {timeout:g}s", retryable=True)
        sleep(interval)


@runtime_checkable
class ServerControl(Protocol):
    """An executor for one model on one third-party server; satisfies RestartExecutor and RollbackExecutor."""

    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def command(self) -> list[str]: ...

    def current(self) -> str: ...

    def rollback(self, to: str) -> tuple[str, str]: ...

    def restart(self) -> tuple[int | None, int]: ...

    def rollback_to(self, to: str, dry_run: bool = False) -> ServerOutcome: ...

    def restart_model(self, dry_run: bool = False) -> ServerOutcome: ...


# ---------------------------------------------------------------- known-good versions


class KeyValue(Protocol):
    """The store's small key/value table (incidentd.store.Store.put / get)."""

    def put(self, key: str, value: Any) -> None: ...

    def get(self, key: str, default: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class KnownGood:
    version: str
    since: float          # when it became known good (unix seconds)
    why: str              # "verified <action id>", "served N s without an incident", "configured"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "since": self.since, "why": self.why}


@dataclass(slots=True)
class KnownGoodTracker:
    """Which version of one model on one server is known good, since when, persisted in the store's kv.

    ``observe(version, healthy, now)`` is called with what the server serves now: a version that keeps
    serving with no active incident for ``promote_after`` seconds becomes known good. ``mark`` records a
    version directly (a verified rollback or restart, or the operator's ``known_good`` setting).
    """

    kv: KeyValue
    kind: str
    model: str
    promote_after: float = 600.0
    clock: Callable[[], float] = field(default=time.time)

    @property
    def _key(self) -> str:
        return f"known_good/{self.kind}/{self.model}"

    @property
    def _serving_key(self) -> str:
        return f"serving/{self.kind}/{self.model}"

    def get(self) -> KnownGood | None:
        d = self.kv.get(self._key)
        return KnownGood(str(d["version"]), float(d["since"]), str(d.get("why", ""))) if d else None

    def mark(self, version: str, why: str, now: float | None = None) -> KnownGood:
        if not version:
            raise ValueError("a known-good version needs a name")
        old = self.get()
        if old is not None and old.version == version:
            return old
        kg = KnownGood(version, self.clock() if now is None else now, why)
        self.kv.put(self._key, kg.to_dict())
        log.info("known-good version of %s on %s: %s (%s)", self.model, self.kind, version, why)
        return kg

    def serving_since(self) -> tuple[str, float] | None:
        """The version last observed serving and since when it serves (trouble or not)."""
        seen = self.kv.get(self._serving_key)
        return (str(seen["version"]), float(seen.get("first", seen["since"]))) if seen else None

    def observe(self, version: str | None, healthy: bool, now: float | None = None) -> KnownGood | None:
        """Note what serves now; promote it once it served ``promote_after`` s with nothing wrong."""
        now = self.clock() if now is None else now
        if not version:
            return self.get()
        seen = self.kv.get(self._serving_key) or {}
        if seen.get("version") != version or not healthy:
            # A new version, or trouble: the clean-serving clock ("since") starts again; "first" is when
            # this version started serving.
            first = seen.get("first", seen.get("since", now)) if seen.get("version") == version else now
            self.kv.put(self._serving_key, {"version": version, "since": now, "first": first})
            return self.get()
        if now - float(seen["since"]) >= self.promote_after:
            return self.mark(version, f"served {now - float(seen['since']):.0f}s without an incident", now)
        return self.get()


class ServerControlAdmin(ModelServerAdmin):
    """The admin interface the actions and the detection loop read (versions, load, clamp), answered by a
    third-party server's executor and incidentd's known-good record instead of the demo server's /admin.

    ``versions()`` also feeds the tracker: each call observes the serving version, healthy when the model
    has no active incident (``active()`` lists the models with one).
    """

    def __init__(self, executor: ServerControl, tracker: KnownGoodTracker,
                 active: Callable[[], Iterable[str]] = lambda: (),
                 verified: Callable[[str, float], str | None] = lambda model, since: None):
        super().__init__(executor.base_url)
        self.executor = executor
        self.tracker = tracker
        self.active = active
        self.verified = verified     # (model, since) -> id of an action verified on it since then, if any

    def versions(self) -> dict[str, Any]:
        current = self.executor.current()
        healthy = self.executor.model not in set(self.active())
        seen = self.tracker.serving_since()
        kg = self.tracker.observe(current, healthy)
        if seen is not None and seen[0] == current:
            # A rollback or restart verified while this version served: it passed verification.
            action = self.verified(self.executor.model, seen[1])
            if action is not None:
                kg = self.tracker.mark(current, f"verified {action}")
        return {"current": current, "known_good": kg.version if kg else None,
                "known_good_since": kg.since if kg else None, "known_good_why": kg.why if kg else None,
                "server": self.executor.kind, "model": self.executor.model}

    def load(self, version: str) -> dict[str, Any]:
        return self.executor.rollback_to(version).to_dict()

    def clamp(self, dry_run: bool, **params: Any) -> dict[str, Any]:
        raise ActionFailed(f"clamp is not available on {self.executor.kind}: incidentd cannot reach the "
                           f"PyTorch checkpoint that {self.executor.target} serves", retryable=False)

    def weights(self) -> dict[str, Any]:
        raise ActionFailed(f"{self.executor.kind} does not expose weights to incidentd", retryable=False)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "current": self.executor.current()}
