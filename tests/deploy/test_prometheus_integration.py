"""A real Prometheus (Debian's package, on 127.0.0.1) scraping real services started by `make up`'s
script (scripts/myelin_stack.py, run as `make up` runs it): targets up, the request counters of SDK
calls in its query API, the alert rules loaded, and every query of the Grafana dashboard valid and,
where the running families feed it, returning data."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.servers import REPO_ROOT
from myelin_client import Client, InvalidArgumentError
from myelin_serving.launch import Service, port_order

pytestmark = [pytest.mark.deploy, pytest.mark.slow]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "myelin.json"
# Panels fed by a family that may not be running (title -> family).
FAMILY_PANELS = {"Tokens per second (generator)": "generator"}


STACK = [sys.executable, str(REPO_ROOT / "scripts" / "myelin_stack.py")]


def stack_up(repository: Path, state: Path, *, prometheus_port: int, interval_s: float = 10) -> list[Service]:
    """`make up` on free ports: the services it started, read from their port files."""
    started = subprocess.run(
        [*STACK, "up", "--repository", str(repository), "--state-dir", str(state), "--free-ports",
         "--prometheus-port", str(prometheus_port), "--prometheus-interval", str(interval_s)],
        timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    assert started.returncode == 0, f"make up failed:\n{started.stdout}\n{started.stderr}"
    ports = {f: json.loads((state / f"{f}.port").read_text()) for f in port_order() if (state / f"{f}.port").exists()}
    return [Service(family, p["port"], p["metrics_port"]) for family, p in ports.items()]


def stack_down(state: Path) -> None:
    subprocess.run([*STACK, "down", "--state-dir", str(state)], check=True, timeout=120, capture_output=True)


def alive(pid: int) -> bool:
    """Running, not a zombie (an exited process nobody reaped counts as stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrometheusAPI:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not (result := self.query(expr)):
            assert time.monotonic() < deadline, f"no data for {expr} after {timeout:.0f} s"
            time.sleep(0.5)
        return result


@pytest.fixture(scope="module")
def stack(
    classifier_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Service], PrometheusAPI]]:
    if not shutil.which("prometheus"):
        pytest.fail("prometheus not found: run `make deploy-tools` (Debian's prometheus)")
    state = tmp_path_factory.mktemp("stack")
    port = free_port()
    services = stack_up(classifier_repository, state, prometheus_port=port, interval_s=1)
    try:
        yield services, PrometheusAPI(port)
    finally:
        stack_down(state)


def test_prometheus_scrapes_the_services_and_serves_their_metrics(stack: tuple[list[Service], PrometheusAPI]) -> None:
    services, prometheus = stack
    (classifier,) = services
    with Client(classifier.target) as client:
        for _ in range(3):
            client.classify(np.zeros((4, 28, 28), np.uint8), model="mnist-cnn")
        with pytest.raises(InvalidArgumentError):
            client.classify(np.zeros((4, 27, 28), np.uint8), model="mnist-cnn")
    prometheus.wait_for('up{job="myelin", service="classifier"} == 1')
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert [(t["labels"]["job"], t["labels"]["service"], t["health"]) for t in targets] == [
        ("myelin", "classifier", "up")
    ]
    ok = prometheus.wait_for(
        'myelin_requests_total{service="classifier", method="/myelin_api.v1.Classifier/Classify", code="OK"} >= 3'
    )
    assert float(ok[0]["value"][1]) == 3
    bad = prometheus.wait_for('myelin_requests_total{service="classifier", code="INVALID_ARGUMENT"}')
    assert float(bad[0]["value"][1]) == 1
    rows = prometheus.wait_for('myelin_inferences_total{service="classifier", model="mnist-cnn"} >= 12')
    assert float(rows[0]["value"][1]) == 12
    info = prometheus.query('myelin_model_info{service="classifier"}')
    assert {(s["metric"]["model"], s["metric"]["provider"]) for s in info} == {
        ("mnist-mlp", "CPUExecutionProvider"),
        ("mnist-cnn", "CPUExecutionProvider"),
    }


def test_alert_and_recording_rules_are_loaded_and_evaluated(stack: tuple[list[Service], PrometheusAPI]) -> None:
    _, prometheus = stack
    groups = prometheus.get("/api/v1/rules")["groups"]
    alerts = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert set(alerts) == {"MyelinServiceDown", "MyelinServiceMissing", "MyelinHighErrorRatio", "MyelinHighLatencyP99"}
    assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups
    # Everything is up and healthy: nothing fires.
    assert prometheus.get("/api/v1/alerts")["alerts"] == []
    prometheus.wait_for('service:myelin_requests:rate5m{service="classifier"}')


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_every_dashboard_query_is_valid_and_the_panels_show_data(stack: tuple[list[Service], PrometheusAPI]) -> None:
    services, prometheus = stack
    running = {s.family for s in services}
    with Client(services[0].target) as client:
        client.classify(np.zeros((2, 28, 28), np.uint8), model="mnist-mlp")
        with pytest.raises(InvalidArgumentError):
            client.classify([], model="mnist-mlp")
    # Grafana's variables, as a Prometheus query sees them: every service, every model, a short window.
    values = {"$__rate_interval": "20s", "$service": ".*", "$model": ".*"}
    panels: dict[str, bool] = {}
    deadline = time.monotonic() + 30
    while True:
        for title, expr in dashboard_queries():
            for variable, value in values.items():
                expr = expr.replace(variable, value)
            panels[title] = panels.get(title, False) or bool(prometheus.query(expr))  # a bad query fails here
        empty = [t for t, shown in panels.items() if not shown and FAMILY_PANELS.get(t, "classifier") in running]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not empty, f"panels without data while the services take traffic: {empty}"
    # The dashboard's variables: label_values(up{job="myelin"}, service) and the models of those services.
    services_seen = prometheus.get("/api/v1/label/service/values", **{"match[]": 'up{job="myelin"}'})
    models_seen = prometheus.get("/api/v1/label/model/values", **{"match[]": 'myelin_model_info{job="myelin"}'})
    assert services_seen == ["classifier"] and models_seen == ["mnist-cnn", "mnist-mlp"]


def test_make_down_stops_what_make_up_started(classifier_repository: Path, tmp_path: Path) -> None:
    services = stack_up(classifier_repository, tmp_path, prometheus_port=free_port())
    pids = {p.stem: int(p.read_text()) for p in tmp_path.glob("*.pid")}
    assert set(pids) == {"classifier", "prometheus", "console"} and len(services) == 1
    stack_down(tmp_path)
    assert not list(tmp_path.glob("*.pid"))
    assert not any(Path(f"/proc/{pid}").exists() and alive(pid) for pid in pids.values())
    assert "classifier service stopped" in (tmp_path / "classifier.log").read_text()
