"""docker-compose.yml and compose.gpu.yml: valid for the compose CLI, and every family wired alike.

The families the services know (myelin_serving.families.names(), from the entry points) must each be enabled in every
deployment artifact: when a family lands, these tests name what is left to switch on.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.servers import REPO_ROOT
from myelin_serving.families import load_family, names
from myelin_serving.settings import HTTP_PORT_OFFSET

FAMILIES = names()

pytestmark = pytest.mark.deploy
ALL_PROFILES = "translator,generator,embedder"


def config(compose: list[str], *files: str, profiles: str = "") -> dict[str, Any]:
    """`compose config`: validates the files and prints the resolved model (anchors merged, variables set)."""
    command = [*compose, "--project-directory", str(REPO_ROOT)]
    for name in files:
        command += ["--file", str(REPO_ROOT / name)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYELIN_", "COMPOSE_"))}
    if profiles:
        env["COMPOSE_PROFILES"] = profiles
    result = subprocess.run([*command, "config"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def family_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in resolved["services"].items() if s.get("image", "").startswith("myelin-serving:")}


def raw_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_files_are_valid_for_the_compose_cli(compose: list[str]) -> None:
    cpu = config(compose, "docker-compose.yml", profiles=ALL_PROFILES)
    gpu = config(compose, "docker-compose.yml", "compose.gpu.yml", profiles=ALL_PROFILES)
    assert set(family_services(cpu)) == {"classifier", "translator", "generator", "embedder"}
    assert {"trainer", "prometheus", "grafana"} <= set(cpu["services"])
    for name, service in family_services(gpu).items():
        assert service["image"] == "myelin-serving:gpu", name
        assert service["build"]["args"]["VARIANT"] == "gpu"
        assert service["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
        assert service["environment"]["MYELIN_DEVICE"] == "cuda"
    assert gpu["services"]["trainer"]["image"] == "myelin-training:gpu"
    assert gpu["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_every_family_service_is_wired_alike(compose: list[str]) -> None:
    resolved = config(compose, "docker-compose.yml", profiles=ALL_PROFILES)
    host_ports: list[str] = []
    for name, service in family_services(resolved).items():
        # Scalable: its gRPC port (its family's) and its HTTP port (REST, OpenAI routes, /metrics: + 1000)
        # published on free ports of loopback, never on fixed ones.
        port = load_family(name).default_port
        texts = [
            published.removesuffix("/tcp")
            if isinstance(published, str)
            else f"{published['host_ip']}:{published.get('published', '')}:{published['target']}"
            for published in service["ports"]
        ]
        assert texts == [f"127.0.0.1::{port}", f"127.0.0.1::{port + HTTP_PORT_OFFSET}"], f"{name} publishes {texts}"
        assert float(service["environment"]["MYELIN_MAX_CONNECTION_AGE_S"]) > 0, name
        assert service["command"] == [name]
        assert service["depends_on"] == {"trainer": {"condition": "service_completed_successfully"}}
        assert any(
            str(v).endswith(":/models:ro")
            or v == {"type": "volume", "source": "models", "target": "/models", "read_only": True}
            for v in service["volumes"]
        ), name
    trainer = resolved["services"]["trainer"]
    assert trainer["command"][0] == "myelin-train-all"
    assert any(
        str(v).endswith(":/data:ro") or (isinstance(v, dict) and v.get("target") == "/data" and v.get("read_only"))
        for v in trainer["volumes"]
    )
    for name in ("prometheus", "grafana"):
        for port in resolved["services"][name]["ports"]:
            text = port if isinstance(port, str) else f"{port['host_ip']}:{port['published']}"
            assert text.startswith("127.0.0.1:"), name
            host_ports.append(text.split(":")[1])
    assert len(host_ports) == len(set(host_ports)), f"two services publish the same host port: {sorted(host_ports)}"
    # The SDK inside the network (docker compose run client ...): a tool, off `up`.
    client = config(compose, "docker-compose.yml", profiles="tools")["services"]["client"]
    assert client["entrypoint"] == ["myelin"] and client["image"].startswith("myelin-training:")
    assert raw_compose()["services"]["client"]["profiles"] == ["tools"]


def test_every_family_the_services_know_is_enabled_everywhere() -> None:
    """A family that landed on main is switched on in compose, Prometheus, Kubernetes and the trainer."""
    services = raw_compose()["services"]
    prometheus = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    dns_names = {n for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    overlay = yaml.safe_load((REPO_ROOT / "deploy/k8s/overlays/cpu/kustomization.yaml").read_text())
    train_all = (REPO_ROOT / "deploy/images/train_all.py").read_text()
    for family in FAMILIES:
        assert family in services, f"docker-compose.yml: add a `{family}` service block"
        assert not services[family].get("profiles"), f"docker-compose.yml: delete the profiles line of `{family}`"
        assert family in dns_names, f"deploy/prometheus/prometheus.yml: add {family} to the dns_sd names"
        assert f"../../families/{family}" in overlay["resources"], (
            f"deploy/k8s/overlays/cpu/kustomization.yaml: uncomment ../../families/{family}"
        )
        assert f'"{family}":' in train_all, f"deploy/images/train_all.py: add {family} to FAMILIES"


def test_compose_enables_only_families_the_services_know() -> None:
    services = raw_compose()["services"]
    enabled = {
        n for n, s in services.items() if "MYELIN_SERVING_IMAGE" in str(s.get("image")) and not s.get("profiles")
    }
    assert enabled <= set(FAMILIES), f"enabled before its service exists: {sorted(enabled - set(FAMILIES))}"
    assert enabled, "no family service enabled"


def test_grafana_is_provisioned_from_the_repository() -> None:
    datasources = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    providers = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/dashboards/myelin.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = providers["providers"]
    mounted = raw_compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounted
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounted
    for dashboard in Path(REPO_ROOT / "deploy/grafana/dashboards").glob("*.json"):
        text = dashboard.read_text()
        assert '"uid": "myelin-prometheus"' in text and source["uid"] == "myelin-prometheus", dashboard.name
