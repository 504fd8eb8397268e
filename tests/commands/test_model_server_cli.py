"""``incidentd model-server`` refuses to expose an open admin API: beyond loopback it needs a token or --insecure."""
from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from incidentd.commands import model_server as cmd
from incidentd.model_server.auth import TOKEN_ENV

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    cmd.register(app)

    @app.callback()
    def _root() -> None:   # a group, so that the command is invoked by its name
        return None

    return app


def test_non_loopback_without_a_token_is_refused_before_anything_starts(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    registry = tmp_path / "registry"
    r = runner.invoke(_app(), ["model-server", "--host", "0.0.0.0", "--registry", str(registry)])
    assert r.exit_code == 2
    assert "refusing to listen on 0.0.0.0 with an open admin API" in r.output
    assert not registry.exists()   # nothing was trained or served


def test_an_empty_token_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "admin-token"
    empty.write_text("\n")
    registry = tmp_path / "registry"
    r = runner.invoke(_app(), ["model-server", "--host", "0.0.0.0", "--registry", str(registry),
                               "--admin-token-file", str(empty)])
    assert r.exit_code == 2
    assert f"{empty}: the admin token file is empty" in r.output
    assert not registry.exists()
