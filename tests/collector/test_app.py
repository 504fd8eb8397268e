"""The sidecar's HTTP app and the ``incidentd sidecar`` command."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import typer
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from collector.app import create_app
from collector.gpu import SimulatedGPUSource
from collector.sidecar import Sidecar
from incidentd.commands import sidecar as sidecar_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_metrics_and_healthz_while_target_is_down(tmp_path: Path) -> None:
    state = tmp_path / "gpu.json"
    state.write_text(json.dumps({"temperature_celsius": 95, "throttled": True}))
    sc = Sidecar(
        f"http://127.0.0.1:{free_port()}",
        interval=0.05,
        gpu_source=SimulatedGPUSource(state),
        registry=CollectorRegistry(),
    )
    with TestClient(create_app(sc)) as client:  # lifespan runs the loop
        def scrapes() -> int:
            snap = sc.snapshot()
            return 0 if snap is None else snap.scrapes_total

        deadline = time.monotonic() + 5
        while scrapes() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(r.text)}
        assert fams["model_up"].samples[0].value == 0.0
        assert fams["incidentd_sidecar_scrape_errors"].samples[0].value >= 2
        assert fams["model_gpu_throttled"].samples[0].value == 1.0
        assert fams["model_gpu_temperature_celsius"].samples[0].value == 95.0
        h = client.get("/healthz").json()
        assert h["status"] == "ok" and h["model_up"] is False
    assert sc._thread is None  # stopped with the app


def test_command_registers_with_help() -> None:
    app = typer.Typer()
    sidecar_command.register(app)

    @app.command("noop")
    def noop() -> None:
        """Keeps typer in multi-command mode."""

    result = CliRunner().invoke(app, ["sidecar", "--help"])
    assert result.exit_code == 0, result.output
    for flag in ("--target", "--port", "--interval", "--gpu", "--gpu-sim-state", "--elasticsearch"):
        assert flag in result.output


def test_command_rejects_bad_gpu_mode() -> None:
    app = typer.Typer()
    sidecar_command.register(app)

    @app.command("noop")
    def noop() -> None:
        """Keeps typer in multi-command mode."""

    result = CliRunner().invoke(app, ["sidecar", "--gpu", "tpu"])
    assert result.exit_code != 0


def test_command_builds_sidecar_with_elasticsearch_sink(tmp_path: Path, monkeypatch) -> None:
    import uvicorn

    from collector.elasticsearch import ElasticsearchSink

    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, **kw))
    app = typer.Typer()
    sidecar_command.register(app)

    @app.command("noop")
    def noop() -> None:
        """Keeps typer in multi-command mode."""

    state = tmp_path / "gpu.json"
    result = CliRunner().invoke(
        app,
        [
            "sidecar",
            "--target",
            "http://127.0.0.1:1",
            "--port",
            "9999",
            "--interval",
            "0.5",
            "--gpu",
            "simulated",
            "--gpu-sim-state",
            str(state),
            "--elasticsearch",
            "http://127.0.0.1:1",
            "--es-spool-dir",
            str(tmp_path / "spool"),
            "--drift-alpha",
            "0.001",
            "--drift-psi-threshold",
            "0.3",
        ],
    )
    assert result.exit_code == 0, result.output
    sc = captured["app"].state.sidecar
    assert captured["port"] == 9999 and sc.interval == 0.5
    assert isinstance(sc.gpu_source, SimulatedGPUSource) and sc.gpu_source.state_path == state
    assert isinstance(sc.sink, ElasticsearchSink)
    assert (sc.config.drift_alpha, sc.config.drift_psi_threshold) == (0.001, 0.3)
    sc.close()
