"""The HTTP port: its settings, start-up errors, /metrics, route errors, the error table's statuses,
body limits and bearer tokens. KServe REST and the OpenAI routes have their own files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from harness.http import HttpAnswer, http_request, raw_http
from harness.servers import BIN, ServerThread, settings_for
from myelin_serving import errors
from myelin_serving.cli import parse_args
from myelin_serving.errors import STATUS_CODES, MyelinError
from myelin_serving.http.app import DirectRoutes
from myelin_serving.http.server import MAX_HEAD
from myelin_serving.server import create_server
from myelin_serving.settings import Settings

INFER = "POST /v2/models/{name}/infer"
IMAGE = np.random.default_rng(3).random((1, 28, 28), dtype=np.float32)
JSON = {"Content-Type": "application/json"}


def infer_body(image: np.ndarray = IMAGE) -> bytes:
    tensor = {"name": "image", "datatype": "FP32", "shape": list(image.shape), "data": image.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def post_infer(server: ServerThread, body: bytes, headers: dict[str, str] | None = None) -> HttpAnswer:
    return http_request(f"{server.http_url}/v2/models/mnist-cnn/infer", "POST", body, JSON | (headers or {}))


@pytest.fixture(scope="module")
def http_server(classifier_repository: Path) -> ServerThread:
    with ServerThread(settings_for(classifier_repository, http_port=0, max_message_bytes=1024 * 1024)) as server:
        yield server


def test_the_http_port_is_the_grpc_port_plus_1000_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MYELIN_HTTP_PORT", "MYELIN_METRICS_PORT", "MYELIN_HTTP_HOST", "MYELIN_METRICS_HOST", "MYELIN_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().with_ports(50051).http_port == 51051
    assert Settings(port=50053).with_ports(50051).http_port == 51053
    assert Settings(port=0).with_ports(50051).http_port == 0  # beside a free port, a free port
    assert Settings(port=50053, http_port=-1).with_ports(50051).http_port == -1
    assert Settings(host="0.0.0.0").http_host == "0.0.0.0"
    monkeypatch.setenv("MYELIN_METRICS_PORT", "9464")  # the metrics server's variable still works
    monkeypatch.setenv("MYELIN_METRICS_HOST", "10.0.0.7")
    assert (Settings().with_ports(50051).http_port, Settings().http_host) == (9464, "10.0.0.7")
    monkeypatch.setenv("MYELIN_HTTP_PORT", "8000")  # and the new name wins
    assert Settings().with_ports(50051).http_port == 8000
    for flag in ("--http-port", "--metrics-port"):
        _, overrides = parse_args(["classifier", flag, "9100"])
        assert overrides["http_port"] == 9100


def test_a_taken_http_port_stops_start_up_naming_the_port_and_the_setting(classifier_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def create() -> None:
            create_server(settings_for(classifier_repository, http_port=port))

        with pytest.raises(OSError, match=f"could not listen on 127.0.0.1:{port} for HTTP") as info:
            asyncio.run(create())
        assert "MYELIN_HTTP_PORT" in str(info.value) and "--http-port" in str(info.value)
        done = subprocess.run(
            [str(BIN / "myelin-serve"), "classifier", "--repository", str(classifier_repository), "--port", "0",
             "--http-port", str(port)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "MYELIN_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
    assert done.returncode == 1
    assert f"could not listen on 127.0.0.1:{port} for HTTP" in done.stderr and "Traceback" not in done.stderr


def test_metrics_health_and_unknown_routes_on_the_one_port(http_server: ServerThread) -> None:
    url = http_server.http_url
    assert post_infer(http_server, infer_body()).status == 200
    assert post_infer(http_server, b"{").status == 400
    metrics = http_request(f"{url}/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, s.labels.get("method"), s.labels.get("code")): s.value
        for family in text_string_to_metric_families(metrics.body.decode())
        for s in family.samples
    }
    assert samples[("myelin_requests_total", INFER, "OK")] >= 1
    assert samples[("myelin_requests_total", INFER, "INVALID_ARGUMENT")] >= 1
    assert ("myelin_request_duration_seconds_count", INFER, None) in samples
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert http_request(f"{url}{path}").status == 200
    # Probes and scrapes are not traffic: no series of their own.
    assert not any(str(method).startswith(("GET /v2/health", "GET /metrics")) for _, method, _ in samples)

    unknown = http_request(f"{url}/v2/nope", "POST", b"{}", JSON)
    assert unknown.status == 404 and INFER in unknown.error and "GET /metrics" in unknown.error
    openai = http_request(f"{url}/v1/chat/completions", "POST", b"{}", JSON)  # OpenAI's error shape under /v1/
    assert openai.status == 404 and openai.json()["error"]["code"] == "not_found"
    assert "no route POST /v1/chat/completions on this classifier service" in openai.error
    wrong_method = http_request(f"{url}/v2/models/mnist-cnn/infer")
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "POST"
    assert "GET is not allowed" in wrong_method.error
    # What the direct dispatch leaves to Starlette's router still answers as Starlette would.
    head = http_request(f"{url}/v2/models/mnist-cnn", "HEAD")
    assert head.status == 200 and head.body == b""
    slash = http_request(f"{url}/v2/models/mnist-cnn/")  # Starlette redirects to the path without the slash
    assert slash.status == 307 and slash.headers["location"].endswith("/v2/models/mnist-cnn")
    escaped = http_request(f"{url}/v2/models/mnist%2Dcnn/ready")  # the path is matched percent-decoded
    assert escaped.status == 200


def test_direct_routes_reach_their_endpoint_and_leave_the_rest_to_starlette() -> None:
    """The inference routes skip Starlette; what no route matches by path and method still reaches it."""
    reached: list[tuple[str, object]] = []

    async def direct(request: Request) -> Response:
        reached.append(("direct", dict(request.path_params)))
        return JSONResponse(request.path_params)

    async def fallen(request: Request) -> Response:
        reached.append(("starlette", f"{request.method} {request.url.path}"))
        return Response(status_code=418)

    starlette = Starlette(routes=[Route("/{rest:path}", fallen, methods=["GET", "POST"])])
    app = DirectRoutes(starlette, [("/v2/models/{name}/infer", ("post",), direct), ("/n/{n:int}", ("GET",), direct)])

    async def call(method: str, path: str, root_path: str = "") -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": root_path,
            "query_string": b"",
            "headers": [],
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    assert asyncio.run(call("POST", "/v2/models/mnist-cnn/infer")) == 200
    assert asyncio.run(call("GET", "/n/7")) == 200  # the path's convertor applies, as in Starlette
    assert reached == [("direct", {"name": "mnist-cnn"}), ("direct", {"n": 7})]
    reached.clear()
    assert asyncio.run(call("GET", "/v2/models/mnist-cnn/infer")) == 418  # the wrong method: Starlette's 405
    assert asyncio.run(call("POST", "/v2/models/mnist-cnn/infer/")) == 418  # not the route's path
    assert asyncio.run(call("POST", "/api/v2/models/mnist-cnn/infer", root_path="/api")) == 418
    assert reached == [
        ("starlette", "GET /v2/models/mnist-cnn/infer"),
        ("starlette", "POST /v2/models/mnist-cnn/infer/"),
        ("starlette", "POST /api/v2/models/mnist-cnn/infer"),
    ]


def test_the_error_table_has_an_http_status_for_every_error() -> None:
    defined = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, MyelinError)}
    assert defined - {MyelinError} == set(STATUS_CODES)
    assert {s.http for s in STATUS_CODES.values()} == {400, 401, 404, 413, 429, 499, 503, 504}


def test_heads_and_bodies_are_bounded_before_they_are_read(http_server: ServerThread) -> None:
    limit = http_server.settings.max_message_bytes
    port = int(http_server.http_url.rsplit(":", 1)[1])
    # Headers: httptools would take any amount; over 64 KB without their end, the answer is 431.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * (MAX_HEAD + 1))
        answer = raw.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 431 ") and f"over {MAX_HEAD} bytes".encode() in answer
    assert http_request(f"{http_server.http_url}/v2", headers={"X-Long": "a" * (MAX_HEAD // 2)}).status == 200
    # A declared length over the limit: 413 at once, without the server waiting for a byte of body.
    started = time.monotonic()
    declared = raw_http(
        http_server.http_url,
        b"POST /v2/models/mnist-cnn/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000000\r\n\r\n",
    )
    assert declared.status == 413 and time.monotonic() - started < 5
    assert f"at most {limit}" in declared.error
    # No length declared (chunked): refused as it streams past the limit.
    chunks = (bytes(64 * 1024) for _ in range(2 * limit // (64 * 1024)))
    streamed = post_infer(http_server, chunks)
    assert streamed.status == 413 and f"over {limit} bytes" in streamed.error
    assert post_infer(http_server, infer_body()).status == 200  # and the server serves on


def test_statuses_of_the_table_reach_http_callers(classifier_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(classifier_repository, repository)
    (repository / "mnist-mlp" / "1" / "model.onnx").write_bytes(b"not an onnx graph")  # fails to load
    with ServerThread(settings_for(repository, http_port=0)) as server:
        url = server.http_url
        not_ready = http_request(f"{url}/v2/models/mnist-mlp/infer", "POST", infer_body(), JSON)
        assert not_ready.status == 503 and "mnist-mlp" in not_ready.error
        assert http_request(f"{url}/v2/models/mnist-mlp/ready").status == 400  # KServe: a 4xx means "not ready"
        assert http_request(f"{url}/v2/models/mnist-vit/ready").status == 404
    with ServerThread(settings_for(repository, http_port=0, default_deadline_s=0.000001)) as server:
        late = post_infer(server, infer_body())
        assert late.status == 504 and "deadline" in late.error


def test_bearer_tokens_guard_http_but_not_probes_or_metrics(
    classifier_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "http-token-9f8e7d"
    settings = settings_for(classifier_repository, http_port=0, auth_tokens=[token], access_log=True)
    caplog.set_level(logging.INFO, logger="myelin_serving.access")
    with ServerThread(settings) as server:
        url = server.http_url
        anonymous = http_request(f"{url}/v2/models/mnist-cnn")
        assert anonymous.status == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert "requires 'authorization: Bearer <token>'" in anonymous.error
        for header in (f"Bearer {token[:-1]}", f"Basic {token}", token, "Bearer "):
            wrong = http_request(f"{url}/v2/models/mnist-cnn", headers={"Authorization": header})
            assert (wrong.status, header) == (401, header) and token not in wrong.error
        # Authentication first: a caller without a token learns nothing from a parse error.
        assert post_infer(server, b"{").status == 401
        assert post_infer(server, infer_body(), {"Authorization": f"Bearer {token}"}).status == 200
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
            assert http_request(f"{url}{path}").status == 200, path
    access = [r.getMessage() for r in caplog.records if r.name == "myelin_serving.access"]
    assert any(line.startswith(f"{INFER} OK ") for line in access)
    assert any(line.startswith("GET /v2/models/{name} UNAUTHENTICATED ") for line in access)
    assert token[:-1] not in caplog.text


def test_stopping_closes_the_http_port(classifier_repository: Path) -> None:
    server = ServerThread(settings_for(classifier_repository, http_port=0)).start()
    url = server.http_url
    assert http_request(f"{url}/v2/health/ready").status == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        http_request(f"{url}/v2/health/ready", timeout=5)
