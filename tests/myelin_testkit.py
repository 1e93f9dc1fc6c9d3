"""Helpers the tests share: a real server in a background thread, a real server process, and the
stock KServe client (tritonclient) run from its own virtualenv."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from myelin_serving.server import MyelinServer, create_server
from myelin_serving.settings import Settings
from myelin_serving.tensors import datatype_of, encode_raw

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRITONCLIENT_PYTHON = REPO_ROOT / ".venv-tritonclient" / "bin" / "python"
TRITONCLIENT_PROBE = REPO_ROOT / "tests" / "serving" / "tritonclient_probe.py"


# New tokens for a generation that must still be running when a test acts on it (cancels it, lets its
# deadline pass, unloads its model): the dry-run GRU decodes 4,000 tokens in under 0.3 s on a fast
# machine, so the tests ask for far more, on generator servers whose context allows it.
ENDLESS_TOKENS = 1_000_000
LONG_GENERATION = {"max_context_tokens": ENDLESS_TOKENS + 64}


def settings_for(repository: Path, **overrides: Any) -> Settings:
    """Loopback, port 0, no HTTP port unless asked for (http_port=0), no background rescans unless asked for."""
    if "metrics_port" in overrides:  # the HTTP port's older name
        overrides["http_port"] = overrides.pop("metrics_port")
    values: dict[str, Any] = {
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


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
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
        command = [
            str(BIN / "myelin-serve"),
            family,
            "--repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--http-port",
            "0",
            "--port-file",
            str(self.port_file),
            *args,
        ]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 60
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._log.close()
                raise RuntimeError(f"myelin-serve did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        ports = json.loads(self.port_file.read_text())
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


@dataclass(frozen=True)
class KServeCall:
    name: str  # the KServe model name: `<model>` or `<model>.<graph>`
    graph_file: Path  # the ONNX file behind it, for the expected answer
    inputs: dict[str, np.ndarray]


def tritonclient_job(target: str, calls: list[KServeCall], **extra: Any) -> dict[str, Any]:
    """What tritonclient_probe.py reads: the target, options (ssl, headers) and the calls to make."""
    models = [
        {
            "name": call.name,
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype_of(array),
                    "shape": list(array.shape),
                    "data": base64.b64encode(encode_raw(array)).decode(),
                }
                for name, array in call.inputs.items()
            ],
        }
        for call in calls
    ]
    return {"target": target, "models": models, **extra}


def run_tritonclient(job: dict[str, Any]) -> dict[str, Any]:
    """Run the stock tritonclient (its own virtualenv, its own process) and return what it saw."""
    if not TRITONCLIENT_PYTHON.exists():
        pytest.fail(f"{TRITONCLIENT_PYTHON} is missing: run `make setup` (it builds .venv-tritonclient)")
    done = subprocess.run(
        [str(TRITONCLIENT_PYTHON), str(TRITONCLIENT_PROBE)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The message of an error body: KServe's {"error": "..."} or OpenAI's {"error": {"message": ...}}."""
        error = self.json()["error"]
        return str(error["message"] if isinstance(error, dict) else error)


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | Iterable[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> HttpAnswer:
    """One request with http.client: any method, headers and body (an iterable is sent chunked), any
    answer status returned rather than raised."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, path or "/", body=body, headers=dict(headers or {}), encode_chunked=chunked)
        response = connection.getresponse()
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def raw_http(url: str, request: bytes, *, timeout: float = 20) -> HttpAnswer:
    """Send `request` as it is (what no HTTP client would send) and read one answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = connection.makefile("rb")
        status = int(answer.readline().split()[1])
        headers = {}
        while (line := answer.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return HttpAnswer(status, headers, answer.read(int(headers["content-length"])))


def sample(server: ServerThread, name: str, labels: dict[str, str]) -> float:
    """A sample of the server's metrics registry (0 when the series does not exist yet)."""
    return server.registry.get_sample_value(name, labels) or 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until `condition()` holds, polling every 20 ms; fails after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def wait_cancelled_and_still(server: ServerThread, model: str, cancelled_before: float) -> None:
    """A generation was cancelled: the sequences counter shows one more cancelled, none is active, and
    the model's token counter stands still (nothing else generates on `model` meanwhile)."""
    labels = {"model": model}
    cancelled = labels | {"outcome": "cancelled"}
    wait_for(lambda: sample(server, "myelin_generator_sequences_total", cancelled) == cancelled_before + 1)
    assert sample(server, "myelin_generator_active_sequences", labels) == 0
    tokens = sample(server, "myelin_generated_tokens_total", labels)
    time.sleep(0.3)
    assert sample(server, "myelin_generated_tokens_total", labels) == tokens
