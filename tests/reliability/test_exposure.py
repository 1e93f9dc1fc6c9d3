"""Security, beyond tests/serving/test_security.py (TLS, mTLS, tokens through the SDK, the CLI and
tritonclient, tokens kept out of the access log): every method of every service is closed without a
token but the probes, the metrics endpoint carries no request content, and request model names never
reach a file outside the repository."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from harness.families import CASES
from harness.families.classifier import CLASSIFY, ZEROS, classify
from harness.rpcs import HEALTH, KSERVE, MODELS, NOT_FOUND, OK, UNDECODABLE, call, get_model, with_fields
from harness.servers import ServerThread, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1.common_pb2 import MODEL_STATE_FAILED, MODEL_STATE_READY, ModelMetadata
from myelin_api.v1.models_pb2 import ListModelsResponse

TOKEN = "reliability-token-5f2a9c"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# The documented choice: probes answer without a token (they say whether the server is up, nothing
# about its models); everything else, reflection and KServe's ModelReady included, needs one.
PROBES = {
    f"/{HEALTH}/Check",
    f"/{HEALTH}/Watch",
    f"/{HEALTH}/List",
    f"/{KSERVE}/ServerLive",
    f"/{KSERVE}/ServerReady",
}
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module", params=list(CASES))
def guarded(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerThread]]:
    case = CASES[request.param]
    repository = request.getfixturevalue(case.repository_fixture)
    with ServerThread(settings_for(repository, service=case.family, auth_tokens=[TOKEN], access_log=True)) as server:
        yield request.param, server


def test_without_a_token_only_the_probes_answer(
    guarded: tuple[str, ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    family, server = guarded
    methods = [*CASES[family].methods(), REFLECTION]
    assert set(methods) >= PROBES
    with grpc.insecure_channel(server.target) as channel:
        for method in methods:
            anonymous = call(channel, method, b"", max_responses=1)  # b"": the empty message of any type
            if method in PROBES:
                assert anonymous.code is OK, (method, anonymous.details)
                continue
            assert (anonymous.code, method) == (UNAUTHENTICATED, method), anonymous.details
            assert "requires 'authorization: Bearer <token>'" in anonymous.details
            for header in (f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN} ", "Bearer "):
                wrong = call(channel, method, b"", metadata=[("authorization", header)], max_responses=1)
                assert (wrong.code, method, header) == (UNAUTHENTICATED, method, header), wrong.details
                assert TOKEN not in wrong.details
            # Authentication comes first: a caller without a token learns nothing from a parse error.
            assert call(channel, method, UNDECODABLE, max_responses=1).code is UNAUTHENTICATED
            authorized = call(channel, method, b"", metadata=[("authorization", f"Bearer {TOKEN}")], max_responses=1)
            assert authorized.code is not UNAUTHENTICATED, method
    # The access log saw every call, and neither the token nor the wrong ones (all contain its prefix).
    access = [r.getMessage() for r in caplog.records if r.name == "myelin_serving.access"]
    assert any(" UNAUTHENTICATED " in line for line in access) and any(" OK " in line for line in access)
    assert TOKEN[:-1] not in caplog.text


MARKER = "zq-request-content-7c1d"


def test_the_metrics_endpoint_shows_no_request_content(classifier_repository: Path) -> None:
    settings = settings_for(classifier_repository, metrics_port=0, auth_tokens=[TOKEN])
    with ServerThread(settings) as server, grpc.insecure_channel(server.target) as channel:
        url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
        token = [("authorization", f"Bearer {TOKEN}")]
        infer = CASES["classifier"].infer
        requests = [
            (CLASSIFY, classify(ZEROS, model=MARKER)),
            (CLASSIFY, classify(ZEROS, model=f"{MARKER}/../../etc/passwd")),
            (f"/{MODELS}/GetModel", get_model(MARKER)),
            (f"/{KSERVE}/ModelInfer", with_fields(infer, id=MARKER)),
            (f"/{KSERVE}/ModelInfer", with_fields(infer, model_name=MARKER)),
            (f"/{KSERVE}/ModelMetadata", pb.ModelMetadataRequest(name="mnist-cnn", version=MARKER)),
            (f"/{HEALTH}/Check", health_pb2.HealthCheckRequest(service=MARKER)),
        ]
        for method, request in requests:
            call(channel, method, request, metadata=token)
        call(channel, CLASSIFY, UNDECODABLE + MARKER.encode(), metadata=token)
        call(channel, CLASSIFY, b"", metadata=[("authorization", f"Bearer {MARKER}")])
        first = urllib.request.urlopen(url, timeout=10).read().decode()
        # Many distinct bad names add no series: labels are bounded by what the server serves.
        for i in range(50):
            call(channel, CLASSIFY, classify(ZEROS, model=f"{MARKER}-{i}"), metadata=token)
        second = urllib.request.urlopen(url, timeout=10).read().decode()
    for text in (first, second):
        assert MARKER not in text and TOKEN not in text
    assert _series(first) == _series(second)
    models = {value for line in second.splitlines() for value in _label(line, "model")}
    assert models <= {"mnist-cnn", "mnist-mlp"}


def _series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _label(line: str, name: str) -> list[str]:
    key = f'{name}="'
    return [line.split(key, 1)[1].split('"', 1)[0]] if key in line else []


def test_model_names_never_reach_files_outside_the_repository(
    tmp_path: Path, classifier_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(classifier_repository, repository)
    # A complete, loadable model right next to the repository, and one a manifest tries to borrow.
    outside = tmp_path / "secret-model" / "1"
    shutil.copytree(classifier_repository / "mnist-cnn" / "1", outside)
    manifest = json.loads((outside / "model.json").read_text())
    (outside / "model.json").write_text(json.dumps({**manifest, "name": "secret-model"}))
    borrowing = repository / "mnist-cnn" / "2"
    borrowing.mkdir()
    graphs = {"model": {**manifest["graphs"]["model"], "file": "../../../secret-model/1/model.onnx"}}
    (borrowing / "model.json").write_text(json.dumps({**manifest, "version": 2, "graphs": graphs}))
    names = [
        "secret-model",
        "../secret-model",
        f"{tmp_path}/secret-model",
        "mnist-cnn/../../secret-model",
        "..%2fsecret-model",
        "mnist-cnn.model/../../../secret-model",
    ]
    infer = CASES["classifier"].infer
    with ServerThread(settings_for(repository)) as server, grpc.insecure_channel(server.target) as channel:
        for name in names:
            for method, request in [
                (CLASSIFY, classify(ZEROS, model=name)),
                (f"/{MODELS}/GetModel", get_model(name)),
                (f"/{KSERVE}/ModelReady", pb.ModelReadyRequest(name=name)),
                (f"/{KSERVE}/ModelMetadata", pb.ModelMetadataRequest(name=name)),
                (f"/{KSERVE}/ModelInfer", with_fields(infer, model_name=name)),
            ]:
                outcome = call(channel, method, request)
                assert outcome.code in (grpc.StatusCode.INVALID_ARGUMENT, NOT_FOUND), (name, method, outcome)
        # The manifest that points outside its version folder makes version 2 FAILED; version 1 serves.
        described = call(channel, f"/{MODELS}/GetModel", get_model("mnist-cnn", 2))
        states = {v.version: (v.state, v.reason) for v in ModelMetadata.FromString(described.responses[0]).versions}
        assert states[1] == (MODEL_STATE_READY, "") and states[2][0] == MODEL_STATE_FAILED
        assert "must be a plain file name inside the version folder" in states[2][1]
        assert call(channel, CLASSIFY, classify(ZEROS, model="mnist-cnn")).code is OK
        listed = call(channel, f"/{MODELS}/ListModels", b"")
        assert listed.code is OK
        assert [m.name for m in ListModelsResponse.FromString(listed.responses[0]).models] == ["mnist-cnn", "mnist-mlp"]
    assert "must be a plain file name inside the version folder" in caplog.text
