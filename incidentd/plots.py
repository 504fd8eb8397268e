"""Pictures people would rather see than read: an incident's signals with its timeline marked."""
from __future__ import annotations

import io
import math

from diagnosis.signals import SourceLike
from diagnosis.types import Incident, TimelineKind
from incidentd.store import Store

# signal -> (metric, matchers, y label)
PANELS = {
    "latency": ("model_latency_seconds", {"quantile": "0.9"}, "p90 latency (s)"),
    "accuracy": ("model_accuracy_ratio", {}, "accuracy"),
    "error_rate": ("model_error_ratio", {}, "error ratio"),
    "nonfinite_outputs": ("model_nonfinite_output_ratio", {}, "non-finite outputs"),
    "weights_nonfinite": ("model_weights_nonfinite", {}, "non-finite weights"),
    "input_drift": ("model_drifted_features", {}, "drifted features"),
    "prediction_drift": ("model_prediction_drift_statistic", {"test": "psi"}, "prediction PSI"),
    "process_cpu": ("model_process_cpu_usage_ratio", {}, "process CPU"),
    "process_memory": ("model_process_resident_memory_bytes", {}, "resident memory (B)"),
    # slow faults (issue 18): drawn with their forecast to exhaustion (see _draw_forecast)
    "memory_leak": ("model_process_resident_memory_bytes", {}, "resident memory (B)"),
    "gpu_memory_leak": ("model_gpu_memory_used_bytes", {}, "GPU memory (B)"),
    "disk_fill": ("model_disk_free_bytes", {}, "free disk (B)"),
    "target_down": ("model_up", {}, "model up"),
}
TIMELINE_COLORS = {TimelineKind.OPENED: "tab:red", TimelineKind.ACTION_STARTED: "tab:orange",
                   TimelineKind.ACTION_EXECUTED: "tab:orange", TimelineKind.MITIGATED: "tab:green",
                   TimelineKind.RESOLVED: "tab:blue", TimelineKind.ESCALATED: "black"}


def render_incident(inc: Incident, store: Store, source: SourceLike, step: float, pad: float = 120.0) -> bytes:
    """A PNG: one panel per signal behind the incident (or the core signals), timeline events as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evidence = store.evidence(inc.evidence_ids)
    names = [e.name for e in evidence if e.name in PANELS] or ["latency", "accuracy", "input_drift"]
    names = list(dict.fromkeys(names))[:5]
    forecasts = {e.name: e.attributes["forecast"] for e in evidence if isinstance(e.attributes.get("forecast"), dict)}
    start = min([inc.opened_at] + [e.at for e in evidence]) - pad
    end = (inc.resolved_at or inc.updated_at) + pad / 2
    if forecasts:   # show the way to exhaustion, up to a horizon the eye can still compare with the data
        end = max(end, min(max(f["exhausts_at"] for f in forecasts.values()), end + 4 * (end - start)))
    timeline = store.timeline(inc.id)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.1 * len(names) + 0.8), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        metric, matchers, ylabel = PANELS[name]
        for s in source.read(metric, {"model": inc.model, **matchers}, start, end, step):
            xs = [t - inc.opened_at for t in s.timestamps]
            ys = [v if math.isfinite(v) else float("nan") for v in s.values]
            ax.plot(xs, ys, lw=1.2, label=s.label("version") or metric)
        for t in timeline:
            color = TIMELINE_COLORS.get(t.kind)
            if color:
                ax.axvline(t.at - inc.opened_at, color=color, ls="--", lw=0.9)
        if name in forecasts:
            _draw_forecast(ax, forecasts[name], inc.opened_at, free=name == "disk_fill")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the incident opened (red: opened, orange: action, "
                           "green: verified, blue: resolved)", fontsize=8)
    top = inc.top
    fig.suptitle(f"{inc.id} · {inc.title}" + (f" · {top.recommended_action} ({top.confidence:.2f})" if top else ""),
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _draw_forecast(ax: object, fc: dict, origin: float, free: bool) -> None:
    """The forecast of a slow fault: the trend extrapolated to the limit, the limit, and when to act."""
    level, limit = float(fc["level"]), float(fc["limit"])
    at, exhausts, act_by = float(fc["at"]), float(fc["exhausts_at"]), float(fc["act_by"])
    if free:   # the panel shows free space: it reaches 0 where usage reaches the size
        level, limit = limit - level, 0.0
    ax.plot([at - origin, exhausts - origin], [level, limit], ls=":", color="tab:red", lw=1.4,  # type: ignore[attr-defined]
            label=f"forecast: {fc['limit_source']} limit at +{(exhausts - at) / 60:.0f} min")
    ax.axhline(limit, color="tab:red", lw=0.8, alpha=0.6)  # type: ignore[attr-defined]
    ax.axvline(act_by - origin, color="tab:purple", ls="-.", lw=0.9,  # type: ignore[attr-defined]
               label=f"act by (lead {float(fc['lead_seconds']) / 60:.0f} min)")


def render_bench(report: dict, path: str) -> str:
    """The fault bench at a glance: time to detect and to recover per fault, misdiagnosed faults in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faults = report["per_fault"]
    names = [f["fault"] for f in faults]
    right = [f["domain_correct"] == f["runs"] and f["root_cause_correct"] == f["runs"] for f in faults]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.38 * len(names) + 1.6), sharey=True)
    for ax, key, title in ((axes[0], "mttd_median_s", "median time to detect (s)"),
                           (axes[1], "mttr_median_s", "median time to recover (s)")):
        values = [f[key] if f[key] is not None else 0.0 for f in faults]
        colors = ["tab:blue" if ok else "tab:red" for ok in right]
        ax.barh(names, values, color=colors)
        for y, f in enumerate(faults):
            if f[key] is None:
                ax.text(0.1, y, "n/a" if key == "mttd_median_s" else "no action", va="center", fontsize=8,
                        color="grey")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()   # shared y: once, so the faults read top-down in bench order
    fig.suptitle(f"{report['runs']} runs: domain accuracy {report['domain_accuracy']:.2f}, root cause "
                 f"{report['root_cause_accuracy']:.2f}, false incidents {report['false_incidents']}, false "
                 f"remediations {report['false_remediations']} (red: misdiagnosed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
