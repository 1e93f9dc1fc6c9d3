"""`make compose-test`: the compose suite built and run for real on this machine, then torn down.

1. A Docker engine: the one `docker info` reaches, or else a private dockerd started here (Debian's
   docker.io, installed when missing) with its data under /tmp/myelin-docker, stopped at the end.
2. The images: the debootstrap base (cached), the service and training images from wheels
   downloaded on the host (deploy/images/build.sh), and Prometheus from Debian's package.
3. `compose up`: the trainer trains (quick config) and exports into the `models` volume; every
   family service enabled in docker-compose.yml starts once it has finished, and must report
   healthy through grpc.health.v1; Prometheus scrapes them.
   One family (`--scale-family`, the classifier) runs `--replicas` (3) replicas from the start.
4. Every service is called through the SDK on its published gRPC port and over KServe REST on its
   HTTP port; Prometheus must see every target up, have the request counters of those calls, and
   have loaded the alert rules.
5. Scale-out: the SDK inside the compose network (`docker compose run client`, scripts/myelin_load.py)
   calls `dns:///classifier:50051` (the family's own port) under closed-loop load; Prometheus must
   see calls on every replica (it finds them through Docker's DNS too); one replica is killed
   (`docker kill`) under the load, which goes on for 10 s more: no call may fail.
6. `compose down --volumes`, whatever happened.

Grafana runs only where its image can be pulled (or is already present): none here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The test harness (tests/harness): each family's smoke call through the SDK.
sys.path.insert(0, str(ROOT / "tests"))

from harness.families import SMOKE  # noqa: E402
from myelin_client import Client  # noqa: E402
from myelin_serving.families import load_family  # noqa: E402
from myelin_serving.settings import HTTP_PORT_OFFSET  # noqa: E402

PROJECT = "myelin-compose-test"
BASE_IMAGE = "myelin-base:bookworm"
PROMETHEUS_IMAGE = "myelin-prometheus:debian"
GRAFANA_IMAGE = "grafana/grafana-oss:11.6.1"
ENGINE_DIR = Path("/tmp/myelin-docker")
timings: dict[str, float] = {}


def log(message: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*command: str, capture: bool = False, check: bool = True) -> str:
    result = subprocess.run(command, check=check, text=True, stdout=subprocess.PIPE if capture else None)
    return result.stdout or ""


@contextmanager
def timed(name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    timings[name] = time.monotonic() - started
    log(f"{name}: {timings[name]:.0f} s")


# --- 1. the engine -------------------------------------------------------------------------------


def engine_reachable() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def apt_install(*packages: str) -> None:
    log(f"apt-get install {' '.join(packages)}")
    run("apt-get", "update", "-qq")
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages)


@contextmanager
def docker_engine() -> Iterator[None]:
    """The reachable engine, or a private dockerd for the duration (its data stays cached in /tmp)."""
    if engine_reachable():
        log("Docker engine: using the one `docker info` reaches")
        yield
        return
    socket = ENGINE_DIR / "docker.sock"
    os.environ["DOCKER_HOST"] = f"unix://{socket}"
    if engine_reachable():
        log(f"Docker engine: using the private dockerd already on {socket}")
        yield
        return
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    ENGINE_DIR.mkdir(parents=True, exist_ok=True)
    log(f"Docker engine: starting a private dockerd (data {ENGINE_DIR / 'data'}, log {ENGINE_DIR / 'dockerd.log'})")
    with (ENGINE_DIR / "dockerd.log").open("ab") as engine_log:
        dockerd = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={ENGINE_DIR / 'data'}",
                f"--exec-root={ENGINE_DIR / 'exec'}",
                f"--pidfile={ENGINE_DIR / 'dockerd.pid'}",
                f"--host=unix://{socket}",
            ],
            stdout=engine_log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not engine_reachable():
            if dockerd.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not start; see {ENGINE_DIR / 'dockerd.log'}")
            time.sleep(0.5)
        yield
    finally:
        log("Docker engine: stopping the private dockerd")
        dockerd.terminate()
        dockerd.wait(timeout=60)


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) when the CLI has it, else Debian's docker-compose."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        apt_install("docker-compose")
    return ["docker-compose"]


# --- 2. the images --------------------------------------------------------------------------------


def build_images() -> dict[str, int]:
    with timed("base image (debootstrap + docker import; cached after the first run)"):
        run(str(ROOT / "deploy/images/base-image.sh"), BASE_IMAGE)
    with timed("service and training images (wheels on the host + docker build)"):
        run(str(ROOT / "deploy/images/build.sh"), "cpu")
    with timed("Prometheus image (Debian's package)"):
        run(
            "docker",
            "build",
            "--quiet",
            "-t",
            PROMETHEUS_IMAGE,
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            str(ROOT / "deploy/prometheus"),
            capture=True,
        )
    images = ["myelin-serving:cpu", "myelin-training:cpu", PROMETHEUS_IMAGE, BASE_IMAGE]
    return {image: int(run("docker", "image", "inspect", "-f", "{{.Size}}", image, capture=True)) for image in images}


# --- 3. compose up ---------------------------------------------------------------------------------


def enabled_families() -> list[str]:
    """The family services docker-compose.yml starts by default: serving image, no profile."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return [
        name
        for name, service in services.items()
        if "MYELIN_SERVING_IMAGE" in str(service.get("image", "")) and not service.get("profiles")
    ]


def containers(compose: list[str], service: str) -> list[str]:
    return run(*compose, "ps", "--all", "-q", service, capture=True).split()


def container(compose: list[str], service: str) -> str:
    (one,) = containers(compose, service)
    return one


def state(container_id: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(run("docker", "inspect", "-f", "{{json .State}}", container_id, capture=True))
    return state


def wait_healthy(compose: list[str], families: list[str], replicas: dict[str, int], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = set(families)
    while pending:
        for family in sorted(pending):
            ids = containers(compose, family)
            states = [state(i) for i in ids]
            healths = [s.get("Health", {}).get("Status") for s in states]
            if len(ids) == replicas.get(family, 1) and all(h == "healthy" for h in healths):
                log(f"{family}: {len(ids)} replica(s) healthy (grpc.health.v1 SERVING)")
                pending.discard(family)
            elif not all(s["Running"] for s in states) or time.monotonic() > deadline:
                run(*compose, "logs", "--tail", "50", family, check=False)
                raise SystemExit(f"{family}: {[s['Status'] for s in states]}, health {healths}")
        time.sleep(1)


def published(compose: list[str], service: str, port: int) -> str:
    """host:port where compose published the service's container port."""
    address = run(*compose, "port", "--index", "1", service, str(port), capture=True).strip()
    host, _, host_port = address.rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{host_port}"


# --- 4. through the SDK and Prometheus ----------------------------------------------------------


def call_services(compose: list[str], families: list[str], data_dir: Path) -> None:
    """Call each service through the SDK on its published port: health, the Models service, its own call."""
    for family in families:
        target = published(compose, family, load_family(family).default_port)
        with Client(target, timeout=60) as client:
            client.wait_ready(timeout=60)
            models = client.list_models()
            if not models or any(m.family != family for m in models):
                raise SystemExit(f"{family} at {target} lists {[(m.name, m.family) for m in models]}")
            served = ", ".join(f"{m.name} v{m.version}" for m in models)
            extra = SMOKE[family](client, data_dir) if family in SMOKE else "no family call yet (its smoke())"
            log(f"{family} at {target} through the SDK: serves {served}; {extra}")
        # The HTTP port (the gRPC port + 1000): KServe REST's readiness and metadata.
        http = published(compose, family, load_family(family).default_port + HTTP_PORT_OFFSET)
        for path in ("/v2/health/ready", f"/v2/models/{models[0].name}"):
            with urllib.request.urlopen(f"http://{http}{path}", timeout=10) as response:
                if response.status != 200:
                    raise SystemExit(f"{family} at http://{http}{path}: HTTP {response.status}")
        log(f"{family} at http://{http}: ready, metadata of {models[0].name} over KServe REST")


def prometheus_get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise SystemExit(f"Prometheus {path}: {body}")
    return body["data"]


def check_prometheus(compose: list[str], families: list[str], timeout: float = 90) -> None:
    base = f"http://{published(compose, 'prometheus', 9090)}"
    deadline = time.monotonic() + timeout
    while True:
        targets = prometheus_get(base, "/api/v1/targets")["activeTargets"]
        up = {t["labels"].get("service") for t in targets if t["labels"].get("job") == "myelin" and t["health"] == "up"}
        counted = {}
        for family in families:
            result = prometheus_get(base, "/api/v1/query", query=f'sum(myelin_requests_total{{service="{family}"}})')
            counted[family] = float(result["result"][0]["value"][1]) if result["result"] else 0.0
        if up >= set(families) and all(counted[f] > 0 for f in families):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"Prometheus: targets up {sorted(up)} (want {families}), request counters {counted}")
        time.sleep(2)
    log(f"Prometheus: every target up ({', '.join(sorted(up))}); myelin_requests_total per service {counted}")
    rules = prometheus_get(base, "/api/v1/rules")["groups"]
    alerts = sorted(r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting")
    expected = {"MyelinServiceDown", "MyelinServiceMissing", "MyelinHighErrorRatio", "MyelinHighLatencyP99"}
    if not expected <= set(alerts):
        raise SystemExit(f"Prometheus loaded alerts {alerts}, missing {sorted(expected - set(alerts))}")
    log(f"Prometheus: alert rules loaded: {', '.join(alerts)}")


# --- 5. scale-out: the SDK over every replica through Docker's DNS, one replica killed -----------------


def prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus_get(base, "/api/v1/query", query=query)["result"]
    return result


def per_replica_calls(base: str, family: str) -> dict[str, float]:
    query = f'sum by (instance) (myelin_requests_total{{service="{family}", method=~".*/Classify"}})'
    return {r["metric"]["instance"]: float(r["value"][1]) for r in prometheus_query(base, query)}


def check_scale_out(compose: list[str], family: str, replicas: int, timeout: float = 120) -> None:
    base = f"http://{published(compose, 'prometheus', 9090)}"
    before = per_replica_calls(base, family)
    target = f"dns:///{family}:{load_family(family).default_port}"
    control = Path(tempfile.mkdtemp(prefix="myelin-load-"))
    control.chmod(0o777)  # the container's user writes nothing, but must read the folder
    command = [*compose, "run", "--rm", "--no-deps", "-T", "-v", f"{control}:/control:ro", "--entrypoint", "python"]
    command += ["client", "/scripts/myelin_load.py", "--target", target, "--stop-file", "/control/stop"]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    try:
        if load.stdout.readline().strip() != "load started":
            raise SystemExit(f"the load client did not start (exit {load.wait()})")
        log(f"{family}: the SDK in the compose network calls {target} under closed-loop load")
        deadline = time.monotonic() + timeout
        while True:  # until Prometheus has scraped calls on every replica
            counts = per_replica_calls(base, family)
            reached = {i: c - before.get(i, 0.0) for i, c in counts.items() if c > before.get(i, 0.0)}
            if len(reached) >= replicas:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{family}: calls reached {len(reached)} of {replicas} replicas: {reached}")
            time.sleep(2)
        log(f"{family}: calls reached every replica through Docker's DNS: {reached}")
        victim = containers(compose, family)[-1]
        run("docker", "kill", victim, capture=True)
        log(f"{family}: killed replica {victim[:12]} (docker kill) under load; 10 s more of load")
        time.sleep(10)
        (control / "stop").touch()
        summary = json.loads(load.stdout.read().strip().splitlines()[-1])
    finally:
        (control / "stop").touch()
        load.wait(timeout=120)
        shutil.rmtree(control, ignore_errors=True)
    if summary["failed"] or not summary["ok"]:
        raise SystemExit(f"{family}: {summary['ok']} calls answered, failed: {summary['failed']}")
    log(f"{family}: {summary['ok']} calls answered, none failed, across the kill")


# --- the run ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="compose-test", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack up (compose down yourself)")
    parser.add_argument("--scale-family", default="classifier", help="the family run as several replicas")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument(
        "--families",
        help="only these (comma-separated): the trainer runs first for them alone, then their services come "
        "up without it (a quicker run on a busy machine); default every family docker-compose.yml enables",
    )
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("MYELIN_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    started = time.monotonic()
    families = args.families.split(",") if args.families else enabled_families()
    log(f"families: {', '.join(families)}")
    with docker_engine():
        compose = [*compose_command(), "--project-name", PROJECT, "--project-directory", str(ROOT)]
        compose += ["--file", str(ROOT / "docker-compose.yml")]
        os.environ.update(
            MYELIN_BASE_IMAGE=BASE_IMAGE,
            MYELIN_PROMETHEUS_IMAGE=PROMETHEUS_IMAGE,
            MYELIN_DATA_DIR=str(data_dir),
            MYELIN_TRAIN_CONFIG="quick",
        )
        sizes = build_images()
        services = ["trainer", *families, "prometheus"]
        if subprocess.run(["docker", "image", "inspect", GRAFANA_IMAGE], capture_output=True).returncode == 0:
            services.append("grafana")
        else:
            log(f"Grafana: no {GRAFANA_IMAGE} image here and no registry to pull it from; not started")
        try:
            up_started = time.monotonic()
            scale = ["--scale", f"{args.scale_family}={args.replicas}"]
            if args.families:
                with timed(f"trainer for {args.families} alone (compose run), then the services start"):
                    train = ["myelin-train-all", "--config", "quick", "--families", args.families]
                    run(*compose, "run", "--rm", "trainer", *train)
                    run(*compose, "up", "--detach", "--no-build", "--no-deps", *scale, *services[1:])
            else:
                with timed("compose up (trainer runs, then the services start)"):
                    run(*compose, "up", "--detach", "--no-build", *scale, *services)
                trainer = state(container(compose, "trainer"))
                if trainer["ExitCode"] != 0:
                    run(*compose, "logs", "trainer", check=False)
                    raise SystemExit(f"trainer exited {trainer['ExitCode']}")
                run(*compose, "logs", "--no-color", "trainer", check=False)
            with timed("services healthy after the trainer finished"):
                wait_healthy(compose, families, {args.scale_family: args.replicas})
            timings["up to all healthy (training included)"] = time.monotonic() - up_started
            with timed("SDK calls"):
                call_services(compose, families, data_dir)
            with timed("Prometheus checks"):
                check_prometheus(compose, families)
            with timed(f"scale-out: {args.replicas} {args.scale_family} replicas, one killed under load"):
                check_scale_out(compose, args.scale_family, args.replicas)
        finally:
            if args.keep:
                log(f"left up: {' '.join(compose)} down --volumes")
            else:
                with timed("compose down"):
                    run(*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
    timings["total"] = time.monotonic() - started
    print("\ncompose-test passed\n")
    print("| step | seconds |\n|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.0f} |")
    print("\n| image | size |\n|---|---|")
    for image, size in sizes.items():
        print(f"| {image} | {size / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()
