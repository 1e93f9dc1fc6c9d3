"""The web console in docker-compose.yml and deploy/k8s: its own image, every family the services know
reached at its HTTP port (its default gRPC port + 1000), the model repository read-only for the
curves, published on loopback."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from harness.servers import REPO_ROOT
from myelin_serving.families import load_family, names

pytestmark = pytest.mark.deploy


def test_compose_runs_the_console_in_front_of_every_family(compose: list[str]) -> None:
    result = subprocess.run(
        [*compose, "--project-directory", str(REPO_ROOT), "--file", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    console = services["console"]
    assert console["image"] == "myelin-console:cpu" and console["build"]["dockerfile"].endswith("console/Dockerfile")
    environment = console["environment"]
    for family in names():
        assert family in services and family in console["depends_on"]
        http_port = load_family(family).default_port + 1000
        assert environment[f"MYELIN_CONSOLE_{family.upper()}_URL"] == f"http://{family}:{http_port}"
    assert environment["MYELIN_CONSOLE_REPOSITORY"] == "/models"
    assert any(
        v == {"type": "volume", "source": "models", "target": "/models", "read_only": True}
        or str(v).endswith(":/models:ro")
        for v in console["volumes"]
    )
    (port,) = console["ports"]
    text = port if isinstance(port, str) else f"{port['host_ip']}:{port['published']}:{port['target']}"
    assert text.removesuffix("/tcp") == "127.0.0.1:8080:8080"


def test_kubernetes_runs_the_console_in_front_of_every_family(kubectl: str) -> None:
    result = subprocess.run(
        [kubectl, "kustomize", str(REPO_ROOT / "deploy/k8s/overlays/cpu")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "myelin-console")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "myelin-console:cpu"
    environment = {e["name"]: e["value"] for e in container["env"]}
    for family in names():
        ports = {p["name"]: p["port"] for p in services[f"myelin-{family}"]["spec"]["ports"]}
        assert environment[f"MYELIN_CONSOLE_{family.upper()}_URL"] == f"http://myelin-{family}:{ports['http']}"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    console = services["myelin-console"]
    assert console["spec"]["selector"].items() <= labels.items()
    assert console["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"] == "http"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
