"""gRPC-JSON transcoding on the HTTP port (`POST /rpc/<service>/<method>`): the same answers as gRPC
for the same request message, server-sent events for streams, the error table's statuses, bounded
bodies, bearer tokens, and a streaming client that hangs up freeing its sequence."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from harness.http import HttpAnswer, http_request
from harness.servers import (
    ENDLESS_TOKENS,
    LONG_GENERATION,
    ServerThread,
    eventually,
    sample,
    settings_for,
    wait_cancelled_and_still,
)
from myelin_api.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)

JSON = {"Content-Type": "application/json"}
CLASSIFY = "/rpc/myelin_api.v1.Classifier/Classify"
LIST_MODELS = "/rpc/myelin_api.v1.Models/ListModels"
GENERATE = "/rpc/myelin_api.v1.Generator/Generate"
GRU = "generator-gru-shakespeare"
TOKEN = "rpc-token-51c0ffee"


@pytest.fixture(scope="module")
def classifier(classifier_repository: Path) -> Iterator[ServerThread]:
    settings = settings_for(classifier_repository, http_port=0, max_message_bytes=64 * 1024)
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def generator(generator_repository: Path) -> Iterator[ServerThread]:
    settings = settings_for(generator_repository, service="generator", http_port=0, generation=LONG_GENERATION)
    with ServerThread(settings) as server:
        yield server


def post(server: ServerThread, path: str, body: Message | dict[str, Any] | bytes, **headers: str) -> HttpAnswer:
    if isinstance(body, Message):
        body = json_format.MessageToJson(body).encode()
    elif isinstance(body, dict):
        body = json.dumps(body).encode()
    return http_request(f"{server.http_url}{path}", "POST", body, JSON | headers)


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def digit_request(model: str, seed: int) -> classifier_pb2.ClassifyRequest:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    raw = classifier_pb2.RawImage(height=28, width=28, dtype=common_pb2.DATA_TYPE_UINT8, data=pixels.tobytes())
    return classifier_pb2.ClassifyRequest(
        model=common_pb2.ModelRef(name=model), images=[classifier_pb2.Image(raw=raw)], top_k=10
    )


@pytest.mark.parametrize("model", ["mnist-mlp", "mnist-cnn"])
def test_unary_answers_equal_the_grpc_answers(classifier: ServerThread, model: str) -> None:
    request = digit_request(model, seed=5)
    with grpc.insecure_channel(classifier.target) as channel:
        expected = classifier_pb2_grpc.ClassifierStub(channel).Classify(request, timeout=30)
        models = models_pb2_grpc.ModelsStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=30)
    answer = post(classifier, CLASSIFY, request)
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == as_json(expected)
    labels = answer.json()["classifications"][0]["labels"]
    assert len(labels) == 10 and labels[0]["probability"] >= labels[-1]["probability"]
    # Field names as in the .proto are accepted too; an empty body is the empty message.
    snake = {"model": {"name": model}, "images": [{"raw": {"height": 28, "width": 28, "dtype": "DATA_TYPE_UINT8",
             "data": base64.b64encode(request.images[0].raw.data).decode()}}], "top_k": 10}  # fmt: skip
    assert post(classifier, CLASSIFY, snake).json() == as_json(expected)
    listed = http_request(f"{classifier.http_url}{LIST_MODELS}", "POST", b"")
    assert listed.status == 200 and listed.json() == as_json(models)
    assert {m["name"] for m in listed.json()["models"]} == {"mnist-mlp", "mnist-cnn"}


def test_bad_requests_get_the_error_tables_statuses(classifier: ServerThread) -> None:
    good = digit_request("mnist-cnn", seed=1)
    cases = [
        (b"{", 400, "the body is not valid JSON"),
        (b"[]", 400, "must be a JSON object, not an array"),
        (b"\xff\xfe", 400, "the body is not valid JSON"),
        (
            {"model": {"name": "mnist-cnn"}, "pictures": []},
            400,
            "not a myelin_api.v1.ClassifyRequest in protobuf's JSON",
        ),
        ({"topK": "ten"}, 400, "topK"),
        ({"model": {"name": "mnist-vit"}, "images": [{"raw": {"height": 1, "width": 1}}]}, 404, "mnist-vit"),
        ({"model": {"name": "mnist-cnn"}, "images": [{}]}, 400, "images[0] is empty"),
    ]
    for body, status, words in cases:
        answer = post(classifier, CLASSIFY, body)
        assert (answer.status, body) == (status, body) and words in answer.error, answer.body
    wrong_type = post(classifier, CLASSIFY, good, **{"Content-Type": "text/plain"})
    assert wrong_type.status == 400 and "application/json" in wrong_type.error
    limit = classifier.settings.max_message_bytes
    big = post(classifier, CLASSIFY, b"{" + b" " * limit + b"}")
    assert big.status == 413 and f"at most {limit}" in big.error
    # Only what gRPC serves, and only by POST; methods that stream requests are not transcoded.
    for path in ("/rpc/myelin_api.v1.Classifier/Nope", "/rpc/myelin_api.v1.Translator/Translate",
                 "/rpc/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                 "/rpc/grpc.health.v1.Health/Watch"):  # fmt: skip
        missing = post(classifier, path, b"{}")
        assert missing.status == 404 and "myelin_api.v1.Classifier/Classify" in missing.error, path
    assert http_request(f"{classifier.http_url}{CLASSIFY}").status == 405
    assert post(classifier, CLASSIFY, good).status == 200  # and it serves on
    codes = {
        code: sample(classifier, "myelin_requests_total", {"method": "POST /rpc/{service}/{method}", "code": code})
        for code in ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED")
    }
    assert all(count >= 1 for count in codes.values()), codes


def test_bearer_tokens_guard_rpc_as_they_guard_grpc(classifier_repository: Path) -> None:
    with ServerThread(settings_for(classifier_repository, http_port=0, auth_tokens=[TOKEN])) as server:
        request = digit_request("mnist-mlp", seed=2)
        assert post(server, CLASSIFY, b"{").status == 401  # before the body is parsed
        assert post(server, CLASSIFY, request, Authorization=f"Bearer {TOKEN[:-1]}").status == 401
        assert post(server, CLASSIFY, request, Authorization=f"Bearer {TOKEN}").status == 200
        assert post(server, "/rpc/grpc.health.v1.Health/Check", {"service": ""}).status == 401
        health = post(server, "/rpc/grpc.health.v1.Health/Check", {"service": ""}, Authorization=f"Bearer {TOKEN}")
        assert health.status == 200 and health.json() == {"status": "SERVING"}
        assert http_request(f"{server.http_url}/v2/health/ready").status == 200  # the probes' route stays open


def read_events(url: str, body: dict[str, Any], events: int | None = None) -> list[dict[str, Any]]:
    """The `data:` events of a streamed answer; with `events`, hang up after that many."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, json.dumps(body).encode(), JSON)
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("content-type", "").startswith("text/event-stream")
        seen = []
        for line in response:
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:]))
                if events is not None and len(seen) == events:
                    break
        return seen
    finally:
        connection.close()


def test_server_streams_are_server_sent_events_equal_to_grpc(generator: ServerThread) -> None:
    request = generator_pb2.GenerateRequest(
        model=common_pb2.ModelRef(name=GRU), prompt="ROMEO:", max_new_tokens=30, temperature=0.9, seed=17, top_k=20
    )
    with grpc.insecure_channel(generator.target) as channel:
        expected = [as_json(r) for r in generator_pb2_grpc.GeneratorStub(channel).Generate(request, timeout=60)]
    events = read_events(f"{generator.http_url}{GENERATE}", as_json(request))

    def joined(messages: list[dict[str, Any]]) -> tuple[str, list[int], dict[str, Any]]:
        # How tokens are grouped into messages depends on timing; the text, the tokens and the end do not.
        return (
            "".join(m["text"] for m in messages),
            [t for m in messages for t in m["tokenIds"]],
            messages[-1]["finish"],
        )

    assert joined(events) == joined(expected)
    assert events[-1]["finish"]["reason"] == "FINISH_REASON_LENGTH" and events[-1]["finish"]["generatedTokens"] == 30
    # An error before the first message is an HTTP status, not a 200 carrying an error event.
    missing = post(generator, GENERATE, {"model": {"name": "generator-nope"}, "prompt": "a"})
    assert missing.status == 404 and "generator-nope" in missing.error


def test_a_streaming_client_that_hangs_up_frees_its_sequence(generator: ServerThread) -> None:
    gru = {"model": GRU}
    eventually(lambda: sample(generator, "myelin_generator_active_sequences", gru) == 0)
    cancelled = sample(generator, "myelin_generator_sequences_total", gru | {"outcome": "cancelled"})
    body = {"model": {"name": GRU}, "prompt": "ROMEO:", "maxNewTokens": ENDLESS_TOKENS}
    assert len(read_events(f"{generator.http_url}{GENERATE}", body, events=3)) == 3
    wait_cancelled_and_still(generator, GRU, cancelled)
