"""The fixed vocabulary that rule packs are written in. Rules are data; this is the code they refer to."""
from __future__ import annotations

from diagnosis.types import ActionKind, ChangeKind

# Signals diagnosis can reason over (one per kind of anomaly the watcher produces).
SIGNALS: dict[str, str] = {
    "latency": "request latency (p90) far above the model's learned baseline, or above its SLO",
    "error_rate": "share of failed requests above its baseline (binomial test)",
    "accuracy": "accuracy on delayed labels below its baseline (exact binomial test)",
    "nonfinite_outputs": "the model returned NaN or infinite outputs",
    "weights_nonfinite": "the loaded weights contain NaN or infinite values",
    "weights_exploding": "the largest weight magnitude is far above the known-good version's",
    "input_drift": "input features drift from the running version's reference (KS/PSI, BH-corrected)",
    "prediction_drift": "the distribution of predicted classes drifts from the reference (PSI)",
    "missing_inputs": "share of null input features above its baseline",
    "unit_change": "a feature arrives in another unit or scale (values >= 10x the reference's largest)",
    "unseen_categories": "code-like features carry codes the reference never had, the known ones unchanged",
    "label_stall": "delayed labels stopped arriving",
    "process_cpu": "model-server process CPU above its baseline",
    "process_memory": "model-server process resident memory above its baseline",
    "memory_leak": "model-server resident memory grows steadily toward its limit (value: seconds until the "
                   "restart is due, i.e. the forecast exhaustion minus the lead time; 0: due now)",
    "gpu_memory_leak": "GPU memory grows steadily toward the GPU's total (value: seconds until action is due)",
    "disk_fill": "free disk space where the model server writes shrinks steadily toward zero (value: seconds "
                 "until action is due)",
    "host_cpu": "host CPU above its baseline",
    "host_memory": "host memory usage high",
    "target_down": "the model server does not answer",
    "monitoring_down": "the metrics target (sidecar) does not answer: every other signal of the model has no data",
    "request_stall": "a predict request has been in flight far longer than any answer takes (a hang)",
    "gpu_thermal": "a GPU is throttling or running hot",
    "gpu_errors": "a GPU reported ECC or Xid errors",
}

CHANGES: frozenset[str] = frozenset(k.value for k in ChangeKind)

CONTEXT: dict[str, str] = {
    "model": "the model's name",
    "running_version": "the version the model server runs now",
    "running_version_known_good": "whether the running version is the registry's known-good version",
}

ACTIONS: dict[ActionKind, str] = {
    ActionKind.CLAMP: "repair non-finite weights and clamp every tensor into the known-good version's bounds",
    ActionKind.ROLLBACK: "switch to the last known-good version (checksum verified, atomic)",
    ActionKind.RESTART: "restart the model-server process",
    ActionKind.NOTIFY: "open the incident and tell people; change nothing on the model",
}
assert set(ACTIONS) == set(ActionKind), "every action kind is described"
