"""`make up` / `make down`: the suite as local processes, for people who do not use containers.

    python scripts/myelin_stack.py up [--repository DIR] [--state-dir .run] [--free-ports]
    python scripts/myelin_stack.py down [--state-dir .run]

`up` starts one `myelin-serve` per family that both the installed services know and the repository
holds models for, each on its family's default port (the one its .proto names, which compose's
containers listen on too: classifier 50051, translator 50052, generator 50053, embedder 50054;
HTTP, with /metrics, on the gRPC port + 1000; `--free-ports` lets each pick free ones), waits until
each says SERVING over grpc.health.v1, and, when a `prometheus` binary is on PATH, starts Prometheus on
127.0.0.1:9090 with a generated scrape config and the suite's alert rules; then the web console
(`myelin-console`, http://127.0.0.1:8080, `--console-port`) in front of the services' HTTP ports.
Pid files, port files, logs and Prometheus' data go to the state directory; `down` stops what they
name (SIGTERM: the services drain, then exit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from myelin_serving.families import load_family, names
from myelin_serving.launch import Service, children, families_in, port_order, spawn, start_service, wait_serving

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules"
PROMETHEUS_PORT = 9090
CONSOLE_PORT = 8080
# Where `make demo` leaves its models (relative to the checkout, where make runs): `make up` serves
# them when there is no model_repository.
DEMO_REPOSITORY = Path(".demo") / "repository"


def planned_ports(families: list[str], *, free_ports: bool) -> dict[str, int]:
    """family -> gRPC port: its default (HTTP on that + 1000), or 0 for free ones (HTTP free too)."""
    return {family: 0 if free_ports else load_family(family).default_port for family in families}


def choose_repository(repository: Path | None) -> Path:
    """The repository asked for; unset, ./model_repository, else the one `make demo` left."""
    if repository is not None:
        if not repository.is_dir():
            raise SystemExit(f"no model repository at {repository}: train first (make demo, or myelin-train-all)")
        return repository
    default = Path("model_repository")
    if default.is_dir():
        return default
    if DEMO_REPOSITORY.is_dir():
        print(f"no ./{default}: serving the models `make demo` left in ./{DEMO_REPOSITORY}")
        return DEMO_REPOSITORY
    raise SystemExit(
        f"no model repository at ./{default} nor ./{DEMO_REPOSITORY}: train first (make demo, or myelin-train-all "
        "into model_repository), or name one with REPOSITORY=DIR"
    )


def prometheus_config(services: list[Service], *, interval_s: float = 10) -> dict[str, Any]:
    """The scrape config for local processes: the compose one's job and labels, static targets."""
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "rule_files": [str(RULES / "*.yml")],
        "scrape_configs": [
            {
                "job_name": "myelin",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{s.http_port}"], "labels": {"service": s.family}} for s in services
                ],
            }
        ],
    }


def start_prometheus(
    services: list[Service], state: Path, *, port: int = PROMETHEUS_PORT, interval_s: float = 10
) -> subprocess.Popen[bytes]:
    """Prometheus on 127.0.0.1:port scraping `services`; its config, data and log live in `state`."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("no prometheus on PATH (Debian: apt-get install prometheus)")
    config = state / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(json.dumps(prometheus_config(services, interval_s=interval_s), indent=2))
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={state / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return spawn("prometheus", command, state)


def wait_prometheus_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus on 127.0.0.1:{port} not ready after {timeout:.0f} s")
        time.sleep(0.2)


def start_console(services: list[Service], repository: Path, state: Path, port: int) -> str:
    """`myelin-console` in front of `services`; returns its address once it listens."""
    port_file = state / "console.port"
    port_file.unlink(missing_ok=True)
    env = {f"MYELIN_CONSOLE_{s.family.upper()}_URL": f"http://127.0.0.1:{s.http_port}" for s in services}
    env |= {"MYELIN_CONSOLE_HOST": "127.0.0.1", "MYELIN_CONSOLE_REPOSITORY": str(repository)}
    command = [str(Path(sys.executable).parent / "myelin-console"), "--port", str(port), "--port-file", str(port_file)]
    process = spawn("console", command, state, env=env)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"myelin-console did not start; see {state / 'console.log'}")
        time.sleep(0.1)
    return f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}"


def up(
    repository: Path,
    state: Path,
    *,
    free_ports: bool = False,
    prometheus_port: int = PROMETHEUS_PORT,
    prometheus_interval_s: float = 10,
    console_port: int | None = None,
) -> list[Service]:
    if any(state.glob("*.pid")):
        raise SystemExit(f"{state} has pid files: the stack is up already (`make down` first)")
    state.mkdir(parents=True, exist_ok=True)
    present = families_in(repository)
    families = [f for f in port_order() if f in present]
    if not families:
        raise SystemExit(f"{repository} holds no model of a family these services know ({', '.join(names())})")
    for family in sorted(set(names()) - present):
        print(f"{family}: no model in {repository}, not started")
    started = time.monotonic()
    processes = {
        family: start_service(family, repository, state, port)
        for family, port in planned_ports(families, free_ports=free_ports).items()
    }
    try:
        services = [wait_serving(family, process, state) for family, process in processes.items()]
    except RuntimeError:
        down(state)
        raise
    for s in services:
        print(f"{s.family}: grpc {s.target}, http http://127.0.0.1:{s.http_port} (REST, /metrics)")
    print(f"all {len(services)} service(s) SERVING {time.monotonic() - started:.1f} s after start")
    if shutil.which("prometheus") is None:
        print("prometheus: not on PATH, not started (Debian: apt-get install prometheus)")
    else:
        start_prometheus(services, state, port=prometheus_port, interval_s=prometheus_interval_s)
        wait_prometheus_ready(prometheus_port)
        print(f"prometheus: http://127.0.0.1:{prometheus_port} (targets, alerts), config {state / 'prometheus.yml'}")
    if console_port is None:  # beside free service ports, a free console port
        console_port = 0 if free_ports else CONSOLE_PORT
    try:
        console = start_console(services, repository, state, console_port)
    except RuntimeError:
        down(state)
        raise
    print(f"console: {console} (every model in a browser)")
    print(f"logs and pid files: {state}; stop with `make down`")
    return services


def down(state: Path, *, timeout: float = 30) -> None:
    """SIGTERM every process a pid file names, wait for it to exit, remove the pid file."""
    for pid_file in sorted(state.glob("*.pid")):
        name = pid_file.stem
        pid = int(pid_file.read_text())
        child = children.pop(pid, None)
        if _is_ours(pid, name):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                print(f"{name}: did not stop within {timeout:.0f} s, killed")
            else:
                print(f"{name}: stopped")
        else:
            print(f"{name}: not running")
        if child is not None:
            child.wait(timeout=10)
        pid_file.unlink()
        (state / f"{name}.port").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        # A child that exited but was not reaped is a zombie: it counts as stopped.
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _is_ours(pid: int, name: str) -> bool:
    """The pid still runs what we started (pids are reused), judged by its command line."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    expected = {"prometheus": b"prometheus", "console": b"myelin-console"}.get(name, b"myelin-serve")
    return _alive(pid) and any(part.endswith(expected) for part in command[:2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin_stack", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the services (and Prometheus) on a model repository")
    start.add_argument(
        "--repository", type=Path, help="default: ./model_repository, else the one `make demo` left (.demo/repository)"
    )
    start.add_argument("--free-ports", action="store_true", help="free ports instead of the families' defaults")
    start.add_argument("--prometheus-port", type=int, default=PROMETHEUS_PORT)
    start.add_argument("--prometheus-interval", type=float, default=10, help="scrape and rule interval, seconds")
    start.add_argument(
        "--console-port",
        type=int,
        help=f"the web console's port (default {CONSOLE_PORT}, a free one with --free-ports)",
    )
    stop = commands.add_parser("down", help="stop what `up` started")
    for command in (start, stop):
        command.add_argument("--state-dir", type=Path, default=Path(".run"))
    args = parser.parse_args(argv)
    if args.command == "up":
        repository = choose_repository(args.repository).resolve()
        up(
            repository,
            args.state_dir,
            free_ports=args.free_ports,
            prometheus_port=args.prometheus_port,
            prometheus_interval_s=args.prometheus_interval,
            console_port=args.console_port,
        )
    else:
        down(args.state_dir)


if __name__ == "__main__":
    main()
