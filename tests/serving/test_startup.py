"""Starting `myelin-serve` the way a new user does: side by side with only --port, with a port taken,
on a repository that is missing or empty, with --device cuda where there is no CUDA; and `make up`
after `make demo`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import onnxruntime as ort
import pytest

from harness.servers import BIN, REPO_ROOT
from myelin_client import Client
from myelin_serving.families import load_family, names

FAMILIES = names()

SERVE = str(BIN / "myelin-serve")


def free_port_pair() -> int:
    """A free port whose + 1000 (the metrics port it implies) is free too."""
    for _ in range(100):
        with socket.socket() as grpc_socket, socket.socket() as metrics_socket:
            grpc_socket.bind(("127.0.0.1", 0))
            port = grpc_socket.getsockname()[1]
            if port + 1000 > 65535:
                continue
            try:
                metrics_socket.bind(("127.0.0.1", port + 1000))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port pair")


@contextmanager
def serving(family: str, repository: Path, tmp: Path, *args: str) -> Iterator[dict[str, int]]:
    """`myelin-serve FAMILY --repository R ARGS...` until it wrote its ports; SIGTERM at the end, exit 0."""
    port_file = tmp / f"{family}-{time.monotonic_ns()}.port"
    log = tmp / f"{family}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [SERVE, family, "--repository", str(repository), "--port-file", str(port_file), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield json.loads(port_file.read_text())
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def refused(*args: str) -> subprocess.CompletedProcess[str]:
    """A `myelin-serve` that must not start: it exits on its own."""
    done = subprocess.run([SERVE, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr, done.stderr
    return done


def test_every_family_side_by_side_with_only_port(classifier_repository: Path, tmp_path: Path) -> None:
    """Each service's HTTP port follows its gRPC port (+ 1000), so four start on one machine."""
    ports = {family: free_port_pair() for family in FAMILIES}
    with ExitStack() as stack:
        bound = {
            family: stack.enter_context(serving(family, classifier_repository, tmp_path, "--port", str(port)))
            for family, port in ports.items()
        }
        http = {family: port + 1000 for family, port in ports.items()}  # metrics_port: http_port's older name
        assert bound == {f: {"port": p, "http_port": http[f], "metrics_port": http[f]} for f, p in ports.items()}
        with Client(f"127.0.0.1:{ports['classifier']}") as client:
            client.wait_ready(timeout=60)


def test_a_taken_port_is_named_with_the_flag_that_moves_it(classifier_repository: Path, tmp_path: Path) -> None:
    port = free_port_pair()
    with serving("classifier", classifier_repository, tmp_path, "--port", str(port)):
        grpc_clash = refused("translator", "--repository", str(classifier_repository), "--port", str(port))
        other = free_port_pair()
        metrics_clash = refused(
            "translator", "--repository", str(classifier_repository), "--port", str(other), "--metrics-port",
            str(port + 1000),
        )  # fmt: skip
    assert f"could not listen on 127.0.0.1:{port} for gRPC" in grpc_clash.stderr
    assert "--port (MYELIN_PORT)" in grpc_clash.stderr
    assert f"could not listen on 127.0.0.1:{port + 1000} for HTTP" in metrics_clash.stderr
    assert "--http-port (MYELIN_HTTP_PORT" in metrics_clash.stderr


def test_each_family_has_its_own_default_port() -> None:
    """The table the CLI, compose and `make up` read: the proto option on each family's service."""
    ports = {family: load_family(family).default_port for family in FAMILIES}
    assert ports == {"classifier": 50051, "translator": 50052, "generator": 50053, "embedder": 50054}


def test_a_missing_repository_stops_the_start_and_an_empty_one_says_why_nothing_serves(tmp_path: Path) -> None:
    missing = refused("classifier", "--repository", str(tmp_path / "nowhere"), "--port", "0")
    assert f"no model repository at {tmp_path / 'nowhere'}" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with serving("classifier", empty, tmp_path, "--port", "0") as ports, Client(f"127.0.0.1:{ports['port']}") as client:
        assert client.health() == "NOT_SERVING"
    assert f"WARNING myelin_serving.server: no classifier model in {empty}" in (tmp_path / "classifier.log").read_text()


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA provider present")
def test_device_cuda_without_cuda_fails_at_start(classifier_repository: Path) -> None:
    done = refused("classifier", "--repository", str(classifier_repository), "--port", "0", "--device", "cuda")
    assert "--device cuda (MYELIN_DEVICE) was asked for" in done.stderr and "onnxruntime-gpu" in done.stderr


def stack(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO_ROOT / "scripts" / "myelin_stack.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_make_up_serves_what_make_demo_left(classifier_repository: Path, tmp_path: Path) -> None:
    nothing = stack(tmp_path, "up", "--free-ports", "--state-dir", "state")
    assert nothing.returncode != 0 and "nor ./.demo/repository" in nothing.stderr
    shutil.copytree(classifier_repository, tmp_path / ".demo" / "repository")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        prometheus_port = probe.getsockname()[1]
    up = stack(tmp_path, "up", "--free-ports", "--state-dir", "state", "--prometheus-port", str(prometheus_port))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "serving the models `make demo` left in ./.demo/repository" in up.stdout
        assert "all 1 service(s) SERVING" in up.stdout
    finally:
        down = stack(tmp_path, "down", "--state-dir", "state")
    assert down.returncode == 0 and "classifier: stopped" in down.stdout
