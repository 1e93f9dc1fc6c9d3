"""Every deployment artifact uses each family's default port, as its .proto names it (D1): compose
publishes it and its HTTP port, + 1000 (on free host ports, so that it scales: test_compose), and
Prometheus scrapes /metrics on the HTTP port (test_k8s checks Kubernetes). A family's port changes
in its .proto, and these tests name every line left to change."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness.servers import REPO_ROOT
from myelin_serving.families import load_family, names
from myelin_serving.settings import HTTP_PORT_OFFSET

FAMILIES = names()

pytestmark = pytest.mark.deploy
PORTS = {family: load_family(family).default_port for family in FAMILIES}


def test_compose_publishes_each_family_on_its_own_port() -> None:
    services: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    for family, port in PORTS.items():
        http = port + HTTP_PORT_OFFSET
        bind = "${MYELIN_BIND:-127.0.0.1}"
        assert services[family]["ports"] == [f"{bind}::{port}", f"{bind}::{http}"], (
            f"docker-compose.yml: {family} publishes its gRPC port {port} and its HTTP port {http} on free host ports"
        )
        # The container listens on the family's default port: nothing sets another one.
        assert "MYELIN_PORT" not in str(services[family].get("environment", "")), family


def test_prometheus_scrapes_each_family_on_its_http_port() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "myelin"]
    scraped = {name: sd["port"] for sd in job["dns_sd_configs"] for name in sd["names"]}
    assert scraped == {family: port + HTTP_PORT_OFFSET for family, port in PORTS.items()}
