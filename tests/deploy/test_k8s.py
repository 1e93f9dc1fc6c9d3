"""deploy/k8s: every kustomization renders (kubectl kustomize, offline) and validates strictly against
the Kubernetes API schemas (kubernetes-validate --strict, schemas bundled), and each family's service
has what scale-out needs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.servers import BIN, REPO_ROOT
from myelin_serving.families import load_family
from myelin_serving.settings import HTTP_PORT_OFFSET

pytestmark = pytest.mark.deploy
K8S = REPO_ROOT / "deploy" / "k8s"
FAMILY_DIRS = sorted(p.name for p in (K8S / "families").iterdir())
KUSTOMIZATIONS = ["overlays/cpu", "overlays/gpu", "training/job", "training/multi-gpu"] + [
    f"families/{f}" for f in FAMILY_DIRS
]


def render(kubectl: str, path: str) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(K8S / path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_validates_strictly(kubectl: str, path: str, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(render(kubectl, path)))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(rendered)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_families_are_the_four_model_families() -> None:
    assert FAMILY_DIRS == ["classifier", "embedder", "generator", "translator"]


@pytest.mark.parametrize("family", FAMILY_DIRS)
def test_each_family_has_what_scale_out_needs(kubectl: str, family: str) -> None:
    docs = render(kubectl, f"families/{family}")
    name = f"myelin-{family}"
    deployment = by_kind(docs, "Deployment")[name]
    service = by_kind(docs, "Service")[name]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[name]
    pdb = by_kind(docs, "PodDisruptionBudget")[name]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == family
    assert container["args"] == [family]
    # gRPC health (grpc.health.v1) decides readiness and liveness; startup allows for loading models.
    # The family's default gRPC port (its .proto's), HTTP on that + 1000 (KServe REST, OpenAI routes, the
    # /metrics Prometheus scrapes): listened, probed and served on.
    port, http = load_family(family).default_port, load_family(family).default_port + HTTP_PORT_OFFSET
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": port, "http": http}
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("grpc", port, "grpc"),
        ("http", http, "http"),
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(http), "/metrics")
    # Warm-up takes seconds: a warm replica joins within 2 s; five minutes allowed before a restart.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] <= 2 and startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert float(env["MYELIN_MAX_CONNECTION_AGE_S"]) > 0
    # SIGTERM: NOT_SERVING, still serving for the drain delay, then draining within the grace period.
    assert 0 < float(env["MYELIN_DRAIN_DELAY_S"]) < float(env["MYELIN_GRACE_PERIOD_S"])
    assert env["MYELIN_REPOSITORY"] == "/models"
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"] == {"claimName": "myelin-models", "readOnly": True}
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Headless, so DNS returns every replica and the SDK's round robin spreads the calls.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == selector
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert hpa["spec"]["minReplicas"] >= 2
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_gpu_overlay_asks_for_a_gpu_per_replica(kubectl: str) -> None:
    def families(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # The model services; the web console (myelin-console) calls them over HTTP and needs no GPU.
        deployments = by_kind(docs, "Deployment").items()
        return {n: d for n, d in deployments if d["metadata"]["labels"]["app.kubernetes.io/name"] == "myelin-serving"}

    cpu = families(render(kubectl, "overlays/cpu"))
    gpu = families(render(kubectl, "overlays/gpu"))
    assert set(gpu) == set(cpu) and gpu
    for name, deployment in gpu.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert container["image"] == "myelin-serving:gpu"
        assert {"name": "MYELIN_DEVICE", "value": "cuda"} in container["env"]
        (cpu_container,) = cpu[name]["spec"]["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in cpu_container["resources"].get("limits", {})


def test_training_jobs_write_the_repository_the_services_read(kubectl: str) -> None:
    (job,) = by_kind(render(kubectl, "training/job"), "Job").values()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["myelin-train-all"]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"]}
    assert claims["models"] == {"claimName": "myelin-models"}
    assert claims["datasets"] == {"claimName": "myelin-datasets", "readOnly": True}
    (multi,) = by_kind(render(kubectl, "training/multi-gpu"), "Job").values()
    (container,) = multi["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["torchrun"] and "--nproc-per-node=4" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
