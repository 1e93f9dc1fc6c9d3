"""Servers for tests: a real server in a background thread, and `myelin-serve` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from myelin_serving.launch import serve_command, wait_ports
from myelin_serving.server import MyelinServer, create_server
from myelin_serving.settings import Settings

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# New tokens for a generation that must still be running when a test acts on it (cancels it, lets its
# deadline pass, unloads its model): the dry-run GRU decodes 4,000 tokens in under 0.3 s on a fast
# machine, so the tests ask for far more, on generator servers whose context allows it.
ENDLESS_TOKENS = 1_000_000
LONG_GENERATION = {"max_context_tokens": ENDLESS_TOKENS + 64}


def settings_for(repository: Path, **overrides: Any) -> Settings:
    """The classifier unless asked for another family; loopback, port 0, no HTTP port unless asked for
    (http_port=0), no background rescans unless asked for."""
    if "metrics_port" in overrides:  # the HTTP port's older name
        overrides["http_port"] = overrides.pop("metrics_port")
    values: dict[str, Any] = {
        "service": "classifier",
        "repository": repository,
        "host": "127.0.0.1",
        "port": 0,
        "http_port": -1,
        "reload_interval_s": 0,
        "grace_period_s": 1,
    }
    values.update(overrides)
    return Settings(**values)


def broken_version(repository: Path, model: str, version: int = 2) -> Path:
    """A copy of `model`'s version 1 as `version` whose ONNX graph is not a graph: a version that fails to load."""
    broken = repository / model / str(version)
    shutil.copytree(repository / model / "1", broken)
    manifest = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**manifest, "version": version}))
    (broken / "model.onnx").write_bytes(b"not a graph")
    return broken


def eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Until `check()` is true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class ServerThread:
    """A real grpc.aio server on its own event loop in a daemon thread."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="myelin-test-server")
        self.server: MyelinServer
        self.port = 0

    def start(self, *, wait_ready: bool = True) -> ServerThread:
        self._thread.start()

        async def create() -> tuple[MyelinServer, int]:
            return create_server(self.settings, registry=self.registry)

        self.server, self.port = self.run(create())
        self.run(self.server.start())
        if wait_ready:
            self.run(self.server.wait_ready(120))
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """http(s)://127.0.0.1:PORT of the HTTP port (started with http_port=0)."""
        http = self.server.http
        assert http is not None, "this server has no HTTP port: pass http_port=0 to settings_for"
        return f"{http.scheme}://127.0.0.1:{http.port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 0) -> None:
        self.run(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """`myelin-serve` as a child process, for what only a process shows (signals, exit codes, logs)."""

    def __init__(self, family: str, repository: Path, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port_file = tmp / f"{family}-{time.monotonic_ns()}.port"
        self.log_path = tmp / f"{family}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        command = serve_command(family, repository, http_port=0, port_file=self.port_file) + list(args)
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        ports = wait_ports(self.port_file, self.process, 60)
        if ports is None:
            self._log.close()
            raise RuntimeError(f"myelin-serve did not start:\n{self.log_path.read_text()}")
        self.port, self.http_port = ports["port"], ports["http_port"]
        self.metrics_port = self.http_port  # /metrics is served on the HTTP port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


async def burst_then_sigterm(
    target: str, process: subprocess.Popen[bytes], request: bytes, *, calls: int, delay: float
) -> tuple[Counter[str], float]:
    """`calls` concurrent ModelInfer calls of `request`, SIGTERM to `process` `delay` s after they start:
    the statuses they ended with, and the seconds the process took to exit."""
    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        await method(request, timeout=30)  # connected and warm

        async def one() -> None:
            try:
                await method(request, timeout=60)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

        tasks = [asyncio.create_task(one()) for _ in range(calls)]
        await asyncio.sleep(delay)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks)
    await asyncio.to_thread(process.wait, 60)
    return codes, time.monotonic() - signalled


def sample(server: ServerThread, name: str, labels: dict[str, str]) -> float:
    """A sample of the server's metrics registry (0 when the series does not exist yet)."""
    return server.registry.get_sample_value(name, labels) or 0.0


def wait_cancelled_and_still(server: ServerThread, model: str, cancelled_before: float) -> None:
    """A generation was cancelled: the sequences counter shows one more cancelled, none is active, and
    the model's token counter stands still (nothing else generates on `model` meanwhile)."""
    labels = {"model": model}
    cancelled = labels | {"outcome": "cancelled"}
    eventually(lambda: sample(server, "myelin_generator_sequences_total", cancelled) == cancelled_before + 1, 20)
    assert sample(server, "myelin_generator_active_sequences", labels) == 0
    tokens = sample(server, "myelin_generated_tokens_total", labels)
    time.sleep(0.3)
    assert sample(server, "myelin_generated_tokens_total", labels) == tokens
