"""`myelin-serve` as a child process: the one place its command line is built, and the wait for the
ports it reports (`--port-file`). The local stack (`make up`), the soak, the demo, the GPU check, the
attacks and the tests start their services through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# `myelin-serve` is installed beside the interpreter that runs this.
SERVE = (str(Path(sys.executable).parent / "myelin-serve"),)
# Processes this interpreter started, so that a stop in the same process (the tests) reaps them.
children: dict[int, subprocess.Popen[bytes]] = {}


def serve_command(
    family: str,
    repository: Path,
    *,
    host: str | None = "127.0.0.1",
    port: int | None = 0,
    http_port: int | None = None,
    device: str | None = None,
    port_file: Path | None = None,
    program: Sequence[str] = SERVE,
) -> list[str]:
    """`myelin-serve FAMILY --repository DIR ...`; a None leaves its flag out (the MYELIN_* variable,
    or the default, applies). `program` is how to run it (`python -m myelin_serving.cli` works too)."""
    command = [*program, family, "--repository", str(repository)]
    flags = {"--host": host, "--port": port, "--http-port": http_port, "--device": device}
    for flag, value in {**flags, "--port-file": port_file}.items():
        if value is not None:
            command += [flag, str(value)]
    return command


def wait_ports(port_file: Path, process: subprocess.Popen[bytes], timeout: float) -> dict[str, int] | None:
    """The ports the service wrote to `port_file` once listening ({"port": ..., "http_port": ...});
    None when the process exited first or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    ports: dict[str, int] = json.loads(port_file.read_text())  # written beside and renamed into place
    return ports


@dataclass(frozen=True)
class Service:
    family: str
    port: int
    http_port: int  # REST, the family's OpenAI-compatible routes, /metrics

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def families_in(repository: Path) -> set[str]:
    """Families with at least one exported version (a manifest naming the family) in the repository."""
    found = set()
    for manifest in repository.glob("*/*/model.json"):
        try:
            found.add(json.loads(manifest.read_text())["family"])
        except (OSError, ValueError, KeyError):
            continue
    return found


def port_order() -> list[str]:
    """The families the services know, by default port (the first family's first)."""
    from myelin_serving.families import by_port  # the families' modules: onnxruntime and all

    return by_port()


def spawn(name: str, command: list[str], state: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`command` in a session of its own (it outlives the caller and ignores the terminal's Ctrl-C),
    its output in state/NAME.log, its pid in state/NAME.pid; the environment is this one's plus `env`,
    less any MYELIN_CONSOLE_* the caller did not pass (the console's addresses are set per start)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_CONSOLE_")} | (env or {})
    with (state / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment
        )
    (state / f"{name}.pid").write_text(f"{process.pid}\n")
    children[process.pid] = process
    return process


def start_service(family: str, repository: Path, state: Path, port: int) -> subprocess.Popen[bytes]:
    """`myelin-serve FAMILY` on `port` (0: a free one), its HTTP port the one the service derives from it."""
    port_file = state / f"{family}.port"
    port_file.unlink(missing_ok=True)
    return spawn(family, serve_command(family, repository, port=port, port_file=port_file), state)


def wait_serving(family: str, process: subprocess.Popen[bytes], state: Path, timeout: float = 180) -> Service:
    """Until the service wrote its port file and its health says SERVING."""
    deadline = time.monotonic() + timeout
    ports = wait_ports(state / f"{family}.port", process, timeout)
    if ports is None:
        raise RuntimeError(f"myelin-serve {family} did not start; see {state / f'{family}.log'}")
    service = Service(family, ports["port"], ports["http_port"])
    with grpc.insecure_channel(service.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return service
            except grpc.RpcError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{family} never became SERVING; see {state / f'{family}.log'}")
            time.sleep(0.2)
