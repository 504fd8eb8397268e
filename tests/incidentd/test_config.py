"""Invalid settings fail at start with the field named; the service never starts half-configured."""
from __future__ import annotations

import subprocess
import sys

import pytest

from incidentd.config import Settings
from incidentd.errors import ConfigError
from remediation.types import ActionKind, ActionMode


def test_yaml_and_env_settings(tmp_path, monkeypatch):
    p = tmp_path / "s.yaml"
    p.write_text("port: 9000\nscrape_targets: [http://127.0.0.1:9101]\nremediation: {default_mode: approve}\n")
    monkeypatch.setenv("INCIDENTD_REMEDIATION__COOLDOWN_SECONDS", "42")
    s = Settings.load(p)
    assert s.port == 9000 and s.remediation.default_mode.value == "approve"
    assert s.remediation.cooldown_seconds == 42


@pytest.mark.parametrize("text,needle", [
    ("port: -1\n", "port"),
    ("scrape_targets: [ftp://x]\n", "scrape_targets"),
    ("remediation: {default_mode: yolo}\n", "remediation.default_mode"),
    ("unknown_key: 1\n", "unknown_key"),
    ("- a list\n", "mapping"),
    ("port: [unclosed\n", "not valid YAML"),
    ("remediation: {executor: {kind: systemd}}\n", "needs 'unit'"),
    ("remediation: {executor: {kind: systemd, unit: 'model-*'}}\n", "glob patterns are refused"),
    ("remediation: {executor: {kind: kubernetes, namespace: ml, deployment: digits}}\n", "needs container"),
    ("remediation: {executor: {kind: kubernetes, namespace: ml, deployment: 'app=x', container: m}}\n",
     "label selectors are refused"),
    ("remediation: {executor: {kind: kubernetes, namespace: ml, deployment: d, container: m, "
     "image_template: 'reg/x:latest'}}\n", "must contain '{version}'"),
    ("remediation: {executor: {kind: local, image_template: 'r/x:{version}'}}\n", "kubernetes' only"),
    ("supervise_command: [python, -m, x]\nremediation: {executor: {kind: systemd, unit: m}}\n",
     "conflicts with executor kind 'systemd'"),
])
def test_invalid_settings_name_the_field(tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        Settings.load(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_serve_refuses_a_bad_rule_pack_with_exit_2(tmp_path):
    pack = tmp_path / "bad.yaml"
    pack.write_text("pack: x\nrules:\n  - name: r\n    when: {fact: signal.nope, op: active}\n"
                    "    then: {domain: model, root_cause: model.x, weight: 0.5, action: notify, explanation: x}\n")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"rules: [{pack}]\ndatabase: {tmp_path / 'db.sqlite'}\n")
    r = subprocess.run([sys.executable, "-m", "incidentd.cli", "serve", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "rule 'r'" in r.stderr and "signal 'nope'" in r.stderr


@pytest.mark.parametrize("executor,restarter,rolls_out", [
    ({"kind": "systemd", "unit": "model@digits", "scope": "user"}, "SystemdUnit", False),
    ({"kind": "kubernetes", "namespace": "ml", "deployment": "digits", "container": "model",
      "image_template": "registry.example.com/ml/digits:{version}"}, "KubernetesDeployment", True),
    ({"kind": "kubernetes", "namespace": "ml", "deployment": "digits", "container": "model"},
     "KubernetesDeployment", False),
])
def test_executor_is_selected_by_settings(tmp_path, executor, restarter, rolls_out):
    from incidentd.runtime import Runtime

    s = Settings.load(None, database=str(tmp_path / "db.sqlite"), model_server_url="http://127.0.0.1:9",
                      remediation={"executor": executor})
    rt = Runtime(s)
    try:
        ctx = rt.remediator.ctx
        assert type(ctx.process).__name__ == restarter
        assert (ctx.rollout is not None) is rolls_out
        if executor["kind"] == "systemd":
            assert ctx.process.command[-1] == "model@digits.service" and "--user" in ctx.process.command
    finally:
        rt.stop()


def test_every_policy_and_detection_setting_reaches_the_service(tmp_path):
    from incidentd.runtime import Runtime

    s = Settings.load(None, database=str(tmp_path / "db.sqlite"), model_server_url="http://127.0.0.1:9",
                      remediation={"modes": {"restart": "approve"}, "flap_limit": 5, "rate_window_seconds": 60,
                                   "revert_on_worse": False},
                      detection={"request_stall_seconds": 7, "confirm_points": 3})
    rt = Runtime(s)
    try:
        p = rt.remediator.policy
        assert (p.flap_limit, p.rate_window_seconds, p.revert_on_worse) == (5, 60, False)
        assert p.mode_for(ActionKind.RESTART) is ActionMode.APPROVE
        stall = next(spec for spec in rt.specs if spec.name == "request_stall")
        assert (stall.threshold, stall.confirm) == (7, 3)
    finally:
        rt.stop()


def test_models_take_names_or_per_model_slos_and_limits(tmp_path):
    assert list(Settings(models=["a", "b"]).models) == ["a", "b"]
    s = Settings(models={"fraud": {"slo": {"latency_p90_seconds": 0.05}, "memory_limit_bytes": 2**32},
                         "ranker": None})
    assert s.model_profiles() == {"latency_slo_seconds": {"fraud": 0.05}, "memory_limit_bytes": {"fraud": 2**32}}
    p = tmp_path / "bad.yaml"
    p.write_text("models:\n  fraud:\n    slo: {latency_p90_seconds: -1}\n")
    with pytest.raises(ConfigError, match="models.fraud.slo.latency_p90_seconds"):
        Settings.load(p)
    p.write_text("models:\n  fraud:\n    slo: {latency_p99: 1}\n")
    with pytest.raises(ConfigError, match="latency_p99"):
        Settings.load(p)
