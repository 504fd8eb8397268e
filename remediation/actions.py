"""The actions incidentd may take, registered by kind. Each plans, executes (idempotently) and reverts.

    >>> act = ACTIONS[ActionKind.ROLLBACK]
    >>> plan = act.plan(ctx, model="digits")
    >>> result = act.execute(ctx, plan)        # a second call with the same plan is a no-op
    >>> act.readback(ctx, plan).done           # does the server show it done? (after a service restart)
    True
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from remediation.executors import ModelServerAdmin
from remediation.executors_systemd import RestartExecutor, RollbackExecutor
from remediation.types import ActionFailed, ActionKind, Applied, Plan, Readback


@dataclass(slots=True)
class ActionContext:
    """What actions act through.

    ``process`` restarts the serving instance: the supervised child (``LocalProcess``, embedded mode), a
    systemd unit or a Kubernetes Deployment. ``rollout`` is set when a rollback must change the serving
    release itself (a Deployment's image, ``release_template.format(version=...)``) rather than load a
    version into the running server through its admin API.
    """

    admin: ModelServerAdmin
    process: RestartExecutor | None = None
    clamp_params: dict[str, Any] | None = None
    rollout: RollbackExecutor | None = None
    release_template: str | None = None

    def release(self, version: str) -> str:
        assert self.release_template is not None
        return self.release_template.format(version=version)


@runtime_checkable
class Action(Protocol):
    kind: ActionKind

    def plan(self, ctx: ActionContext, model: str) -> Plan: ...

    def execute(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]: ...

    def simulate(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]: ...

    def revert(self, ctx: ActionContext, plan: Plan, result: dict[str, Any]) -> dict[str, Any] | None: ...

    def readback(self, ctx: ActionContext, plan: Plan) -> Readback:
        """Ask the server whether ``plan`` took effect; never raises (unreachable reads as unknown)."""
        ...


ACTIONS: dict[ActionKind, Action] = {}


T = TypeVar("T")


def action(kind: ActionKind) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        setattr(cls, "kind", kind)  # noqa: B010 - the registered class learns its kind
        instance = cls()
        if not isinstance(instance, Action):
            raise TypeError(f"{cls.__name__} does not implement Action (plan, execute, simulate, revert, readback)")
        ACTIONS[kind] = instance
        return cls
    return deco


@action(ActionKind.CLAMP)
class Clamp:
    """Repair non-finite weights from the known-good version, clamp every tensor into its bounds."""

    def _params(self, ctx: ActionContext) -> dict[str, Any]:
        return dict(ctx.clamp_params or {"bounds": "minmax", "margin": 0.1})

    def plan(self, ctx: ActionContext, model: str) -> Plan:
        preview = ctx.admin.clamp(dry_run=True, **self._params(ctx))
        tensors = [t for t in preview.get("tensors", []) if t.get("nonfinite_repaired") or t.get("clamped")]
        desc = (f"repair {sum(t.get('nonfinite_repaired', 0) for t in tensors)} non-finite values and clamp "
                f"{sum(t.get('clamped', 0) for t in tensors)} values in {len(tensors)} tensors of {model} "
                f"into the known-good version's bounds")
        return Plan(ActionKind.CLAMP, ctx.admin.base_url, {**self._params(ctx), "preview": tensors}, desc,
                    noop=not preview.get("changed", bool(tensors)))

    def execute(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]:
        # Clamping is idempotent by construction: a second call finds nothing to change.
        params = {k: v for k, v in plan.params.items() if k != "preview"}
        return ctx.admin.clamp(dry_run=False, **params)

    def simulate(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]:
        params = {k: v for k, v in plan.params.items() if k != "preview"}
        return ctx.admin.clamp(dry_run=True, **params)

    def revert(self, ctx: ActionContext, plan: Plan, result: dict[str, Any]) -> dict[str, Any] | None:
        # The clamped weights are the known-good bounds; reloading the running version's checkpoint from
        # the registry is the way back.
        current = ctx.admin.versions().get("current")
        if not current:
            return None
        return ctx.admin.load(current)

    def readback(self, ctx: ActionContext, plan: Plan) -> Readback:
        # A dry run with the plan's own bounds: done when it finds nothing left to repair or clamp.
        params = {k: v for k, v in plan.params.items() if k != "preview"}
        try:
            preview = ctx.admin.clamp(dry_run=True, **params)
        except ActionFailed as e:
            return Readback(Applied.UNKNOWN, {"error": str(e)}, f"could not read the weights back: {e}")
        tensors = preview.get("tensors", [])
        shown = {"version": preview.get("version"), "changed": bool(preview.get("changed")),
                 "nonfinite": sum(int(t.get("nonfinite_repaired", 0)) for t in tensors),
                 "out_of_bounds": sum(int(t.get("clamped", 0)) for t in tensors)}
        if "changed" not in preview:
            return Readback(Applied.UNKNOWN, shown, "the server's dry-run clamp did not say whether anything "
                                                   "is left to change")
        if shown["changed"]:
            return Readback(Applied.NOT_DONE, shown,
                            f"the weights of {shown['version']} still hold {shown['nonfinite']} non-finite and "
                            f"{shown['out_of_bounds']} out-of-bounds values")
        return Readback(Applied.DONE, shown, f"the weights of {shown['version']} are finite and within the "
                                             "known-good bounds")


@action(ActionKind.ROLLBACK)
class Rollback:
    """Switch to the last known-good version (the server verifies its checksum; the swap is atomic)."""

    def plan(self, ctx: ActionContext, model: str) -> Plan:
        v = ctx.admin.versions()
        current, good = v.get("current"), v.get("known_good")
        if not good:
            raise ActionFailed(f"{model} has no known-good version to roll back to", retryable=False)
        if ctx.rollout is not None:
            running, image = ctx.rollout.current(), ctx.release(good)
            server = getattr(ctx.rollout, "server", None)    # a third-party server's control API, by name
            what = (f"roll {model} back on {server} from {running} to known-good {image}" if server
                    else f"set the image of {model} from {running} to known-good {image}")
            return Plan(ActionKind.ROLLBACK, getattr(ctx.rollout, "target", "rollout"),
                        {"from": running, "to": image, "version": good, "via": "rollout"}, what,
                        noop=running == image)
        return Plan(ActionKind.ROLLBACK, ctx.admin.base_url, {"from": current, "to": good},
                    f"roll {model} back from {current} to known-good {good}", noop=current == good)

    def execute(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]:
        if plan.params.get("via") == "rollout":
            if ctx.rollout is None:
                raise ActionFailed("the plan rolls out an image but no rollout executor is configured")
            old, new = ctx.rollout.rollback(plan.params["to"])
            return {"noop": old == new, "from": old, "to": new}
        now = ctx.admin.versions().get("current")
        if now == plan.params["to"]:
            return {"noop": True, "current": now, "reason": "already on the known-good version"}
        res = ctx.admin.load(plan.params["to"])
        return {"noop": False, "from": now, "to": plan.params["to"], "server": res}

    def simulate(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]:
        return {"would_switch": {"from": plan.params["from"], "to": plan.params["to"]}}

    def revert(self, ctx: ActionContext, plan: Plan, result: dict[str, Any]) -> dict[str, Any] | None:
        if result.get("noop") or not result.get("from"):
            return None
        if plan.params.get("via") == "rollout" and ctx.rollout is not None:
            old, new = ctx.rollout.rollback(result["from"])
            return {"from": old, "to": new}
        return ctx.admin.load(result["from"])

    def readback(self, ctx: ActionContext, plan: Plan) -> Readback:
        target = str(plan.params["to"])
        shown: dict[str, Any]
        try:
            if plan.params.get("via") == "rollout":
                if ctx.rollout is None:
                    return Readback(Applied.UNKNOWN, {}, "the plan rolls out a release but no rollout executor "
                                                         "is configured to read it back")
                shown = {"serving": ctx.rollout.current()}
            else:
                v = ctx.admin.versions()
                # the registry's pointer, and (demo server) the version loaded in memory: both must be the target
                shown = {"serving": v.get("current"), **({"running": v["running"]} if "running" in v else {})}
        except ActionFailed as e:
            return Readback(Applied.UNKNOWN, {"error": str(e)}, f"could not read the serving version: {e}")
        if not shown["serving"]:
            return Readback(Applied.UNKNOWN, shown, "the server names no serving version")
        applied = (Applied.DONE if all(shown[k] == target for k in shown) else Applied.NOT_DONE)
        serving = shown.get("running", shown["serving"])
        return Readback(applied, {**shown, "target": target},
                        f"the server serves {serving}; the plan's target is {target}")


@action(ActionKind.RESTART)
class Restart:
    """Restart the serving instance through the configured executor (process, systemd unit, Deployment)."""

    def plan(self, ctx: ActionContext, model: str) -> Plan:
        if ctx.process is None:
            raise ActionFailed("restart needs a supervised process (embedded mode) or an executor "
                               "configured for the model (remediation.executor)", retryable=False)
        return Plan(ActionKind.RESTART, " ".join(ctx.process.command[:6]), {"pid": ctx.process.pid},
                    f"restart the model server of {model} (instance {ctx.process.pid}): "
                    f"{' '.join(ctx.process.command[:6])}")

    def execute(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]:
        assert ctx.process is not None
        if plan.params.get("pid") is not None and ctx.process.pid not in (plan.params["pid"], None):
            # The process planned for is gone already: a retried request must not restart twice.
            return {"noop": True, "pid": ctx.process.pid, "reason": "already restarted"}
        old, new = ctx.process.restart()
        return {"noop": False, "old_pid": old, "new_pid": new}

    def simulate(self, ctx: ActionContext, plan: Plan) -> dict[str, Any]:
        return {"would_restart_pid": plan.params.get("pid")}

    def revert(self, ctx: ActionContext, plan: Plan, result: dict[str, Any]) -> dict[str, Any] | None:
        return None   # a restart cannot be undone, and needs no undoing

    def readback(self, ctx: ActionContext, plan: Plan) -> Readback:
        # Done when the serving instance changed since the plan. An executor that names no instance (an
        # MLServer or Triton repository API: pid None) cannot tell a restarted server from the old one.
        planned = plan.params.get("pid")
        if ctx.process is None:
            return Readback(Applied.UNKNOWN, {"planned": planned}, "no executor is configured to read the "
                                                                   "serving instance from")
        try:
            now = ctx.process.pid
        except ActionFailed as e:
            return Readback(Applied.UNKNOWN, {"planned": planned, "error": str(e)},
                            f"could not read the serving instance: {e}")
        shown = {"planned": planned, "instance": now}
        if planned is None or now is None:
            return Readback(Applied.UNKNOWN, shown, "the executor names no serving instance, so a restart "
                                                    "cannot be told from the old instance")
        if now == planned:
            return Readback(Applied.NOT_DONE, shown, f"instance {now} still serves: the one the plan restarts")
        return Readback(Applied.DONE, shown, f"instance {now} serves, not the planned {planned}: it restarted")
