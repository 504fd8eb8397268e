"""docker-compose.yml: structure, pinned images, healthchecks, mounts that exist, consistent wiring.

No Docker engine runs here; ``docker compose config`` (or ``docker-compose config``) validates the
file when a compose client is installed.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from .conftest import DASHBOARDS, REPO

COMPOSE = REPO / "docker-compose.yml"
EXPECTED = {"prometheus", "alertmanager", "elasticsearch", "kibana", "kibana-setup", "grafana", "incidentd",
            "model-server", "sidecar", "postgres", "incidentd-2"}
ONE_SHOT = {"kibana-setup"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services(compose):
    assert set(compose["services"]) == EXPECTED


def test_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: image {image!r} is not pinned"
        if "build" in svc:
            assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name


def test_healthchecks(compose):
    for name, svc in compose["services"].items():
        if name in ONE_SHOT:
            continue
        hc = svc.get("healthcheck")
        assert hc and hc["test"] and hc.get("interval"), f"{name} has no healthcheck"


def test_every_mounted_file_exists(compose):
    named = set(compose.get("volumes", {}))
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: mounted {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_ports_are_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published beyond loopback"


def test_depends_on_healthy_services(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_elastic_stack_major_matches_python_client(compose):
    import elasticsearch

    major = elasticsearch.__versionstr__.split(".")[0]
    for name in ("elasticsearch", "kibana"):
        tag = compose["services"][name]["image"].rpartition(":")[2]
        assert tag.split(".")[0] == major, f"{name} {tag} vs client {elasticsearch.__versionstr__}"
    assert compose["services"]["elasticsearch"]["image"].rpartition(":")[2] == \
        compose["services"]["kibana"]["image"].rpartition(":")[2]


def _service_ports(compose) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for name, svc in compose["services"].items():
        out[name] = {int(str(p).rsplit(":", 1)[1]) for p in svc.get("ports", [])}
    return out


def test_wiring_between_configs_and_services(compose):
    ports = _service_ports(compose)
    prom = yaml.safe_load((DASHBOARDS / "prometheus" / "prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    continue
                assert int(port) in ports[host], f"prometheus job {job['job_name']} scrapes {target}"
    (am,) = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert int(am.rsplit(":", 1)[1]) in ports[am.rsplit(":", 1)[0]]
    amc = yaml.safe_load((DASHBOARDS / "alertmanager" / "alertmanager.yml").read_text())
    for r in amc["receivers"]:
        for hook in r.get("webhook_configs", []):
            u = urlparse(hook["url"])
            assert u.port in ports[u.hostname]
            token = hook["http_config"]["authorization"]["credentials_file"]
            mounts = [v.split(":")[1] for v in compose["services"]["alertmanager"]["volumes"]]
            assert token in mounts, "the webhook token file is not mounted into alertmanager"
    ds = yaml.safe_load((DASHBOARDS / "grafana" / "provisioning" / "datasources" / "incidentd.yml").read_text())
    for d in ds["datasources"]:
        u = urlparse(d["url"])
        assert u.port in ports[u.hostname], d["name"]
    # The rule files Prometheus loads are mounted where prometheus.yml looks for them.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]}
    for pattern in prom["rule_files"]:
        directory = str(Path(pattern).parent)
        assert directory in mounts and list((REPO / mounts[directory]).glob(Path(pattern).name))


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_client_validates_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose client installed (docker compose / docker-compose); structure tested above")
    proc = subprocess.run([*cli, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
