"""A crashed service comes back: compose restarts it and Kubernetes restarts it on a failed liveness
probe, and both wait out the service's drain before killing it. Static checks of the files; the exit
codes these policies rely on are tested on a real process in test_faults.py."""

from __future__ import annotations

import re
from typing import Any

import yaml

from harness.servers import REPO_ROOT
from myelin_serving.settings import Settings

DEFAULT_GRACE_S = Settings.model_fields["grace_period_s"].default


def seconds(duration: str | int) -> float:
    """Compose durations: "15s", "1m30s", or a number of seconds."""
    if isinstance(duration, int):
        return duration
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None and duration, f"unreadable duration {duration!r}"
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_restarts_every_long_running_service_and_outwaits_the_drain() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())  # merge keys (<<) resolved
    serving = {n: s for n, s in compose["services"].items() if str(s.get("image", "")).find("myelin-serving") >= 0}
    assert "classifier" in serving
    for name, service in compose["services"].items():
        expected = ("no",) if name in ("trainer", "client") else ("unless-stopped", "always", "on-failure")
        assert service.get("restart") in expected, name
    for name, service in serving.items():
        grace = float(environment(service).get("MYELIN_GRACE_PERIOD_S", DEFAULT_GRACE_S))
        assert seconds(service["stop_grace_period"]) > grace, name


def test_kubernetes_restarts_on_a_failed_liveness_probe_and_outwaits_the_drain() -> None:
    deployment = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "service" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod.get("restartPolicy", "Always") == "Always"
    (container,) = pod["containers"]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    liveness = container["livenessProbe"]
    assert liveness["grpc"]["port"] == grpc_port  # grpc.health.v1 on the serving port
    env = {e["name"]: e["value"] for e in container["env"]}
    drain = float(env.get("MYELIN_GRACE_PERIOD_S", DEFAULT_GRACE_S))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_s = float(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain
