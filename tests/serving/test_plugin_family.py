"""A family is a plug-in: the tiny `identity` family of tests/plugins (its own proto, settings, metrics
and model type, an ONNX Identity graph built here) joins through its entry point alone, and the core
serves it like the shipped families: health, reflection, the Models service, KServe v2, metrics, the
shared bad-input table, `myelin-serve identity` and its MYELIN_IDENTITY__* variables."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from onnx import TensorProto, helper

from harness.rpcs import INVALID, MESSAGE_LIMIT, NOT_FOUND, TOO_BIG, UNDECODABLE, Bad, ServiceCase, call, kserve_infer
from harness.servers import REPO_ROOT, ServerProcess, ServerThread, eventually, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import common_pb2, models_pb2
from myelin_serving.families import load_family, names
from myelin_serving.settings import Settings

PLUGINS = REPO_ROOT / "tests" / "plugins"
MODEL = "identity"


@pytest.fixture(scope="module")
def plugin() -> Iterator[Any]:
    """tests/plugins on sys.path: the myelin-identity distribution (entry point and module) is installed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(PLUGINS))
        yield __import__("myelin_identity")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`identity` version 1: an ONNX Identity graph, x (B, 1) -> y (B, 1), and its manifest."""
    version = tmp_path_factory.mktemp("identity-repository") / MODEL / "1"
    version.mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, version / "model.onnx")
    manifest = {"name": MODEL, "version": 1, "family": "identity", "graphs": {"model": {"file": "model.onnx"}}}
    (version / "model.json").write_text(json.dumps(manifest))
    return version.parent.parent


@pytest.fixture(scope="module")
def server(plugin: Any, repository: Path) -> Iterator[ServerThread]:
    settings = settings_for(repository, service="identity", max_message_bytes=MESSAGE_LIMIT)
    with ServerThread(settings) as server:
        yield server


def echo(model: str = MODEL, *values: float) -> Any:
    from myelin_identity import EchoRequest

    return EchoRequest(model=common_pb2.ModelRef(name=model), values=list(values))


def test_the_family_comes_from_its_entry_point(plugin: Any) -> None:
    assert "identity" in names()
    family = load_family("identity")
    assert family is plugin.FAMILY and family.default_port == plugin.DEFAULT_PORT


def test_health_reflection_and_the_models_service(plugin: Any, server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", plugin.SERVICE, "myelin_api.v1.Models", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == 1  # SERVING
        assert plugin.SERVICE in ProtoReflectionDescriptorDatabase(channel).get_services()
        listed = call(channel, "/myelin_api.v1.Models/ListModels", models_pb2.ListModelsRequest())
    (model,) = models_pb2.ListModelsResponse.FromString(listed.responses[0]).models
    assert (model.name, model.family, model.version) == (MODEL, "identity", 1)


def test_its_own_rpc_and_kserve_run_the_graph(plugin: Any, server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        answer = call(channel, plugin.ECHO, echo(MODEL, 1.5, -2.0, 3.25))
        infer = call(channel, "/inference.GRPCInferenceService/ModelInfer", kserve_request())
    assert plugin.EchoResponse.FromString(answer.responses[0]).values == [1.5, -2.0, 3.25]
    output = pb.ModelInferResponse.FromString(infer.responses[0])
    assert np.frombuffer(output.raw_output_contents[0], "<f4").tolist() == [4.0, 5.0]


def kserve_request() -> pb.ModelInferRequest:
    return kserve_infer(MODEL, "x", np.array([[4.0], [5.0]], "<f4"), "FP32")


def test_its_metrics_and_the_cores_are_on_the_servers_registry(plugin: Any, server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        for _ in range(3):
            call(channel, plugin.ECHO, echo(MODEL, 1.0, 2.0))
    sample = server.registry.get_sample_value
    assert sample("myelin_identity_echoes_total", {"model": MODEL}) >= 3
    assert sample("myelin_requests_total", {"method": plugin.ECHO, "code": "OK"}) >= 3
    assert sample("myelin_inferences_total", {"model": MODEL}) >= 6
    assert sample("myelin_model_info", {"model": MODEL, "version": "1", "family": "identity",
                                        "provider": "CPUExecutionProvider"}) == 1  # fmt: skip


def identity_case(plugin: Any) -> ServiceCase:
    """The family's entry in the shared bad-input table: its own bad requests, and the shared ones
    (Models, KServe v2, health) that `all_bad` derives from its model and KServe request."""
    over = echo(MODEL, *[0.0] * 65)
    return ServiceCase(
        family="identity",
        repository_fixture="repository",
        model=MODEL,
        services=(plugin.SERVICE,),
        infer=kserve_request(),
        good=((plugin.ECHO, echo(MODEL, 1.0)),),
        bad=(
            Bad("no values", plugin.ECHO, echo(MODEL), INVALID, "values is empty"),
            Bad("65 values", plugin.ECHO, over, INVALID, "the limit is 64"),
            Bad("unknown model", plugin.ECHO, echo("nope", 1.0), NOT_FOUND, "this identity service serves"),
            Bad("bad name", plugin.ECHO, echo("../x", 1.0), INVALID, "not a valid model name"),
            Bad("undecodable", plugin.ECHO, UNDECODABLE, INVALID, "not a valid message"),
            Bad("over the size limit", plugin.ECHO, echo(MODEL, *[0.0] * (MESSAGE_LIMIT // 4)), TOO_BIG, "larger"),
        ),
        fuzz=(),
    )


def test_the_shared_bad_input_table(plugin: Any, server: ServerThread) -> None:
    case = identity_case(plugin)
    wrong = []
    with grpc.insecure_channel(server.target) as channel:
        for bad in case.all_bad():
            outcome = call(channel, bad.method, bad.request)
            if (outcome.code, bad.message in outcome.details) != (bad.code, True):
                wrong.append(f"{bad.id}: {outcome.code.name} {outcome.details[:200]}")
        good = [call(channel, method, request).code for method, request in case.well_formed()]
    assert len(case.all_bad()) > 100 and wrong == []
    assert set(good) == {grpc.StatusCode.OK}


def test_myelin_serve_serves_it_with_its_own_settings(plugin: Any, repository: Path, tmp_path: Path) -> None:
    """`myelin-serve identity` in a process of its own: the command line offers the family, and its
    section of the settings comes from MYELIN_IDENTITY__* as the shipped families' do."""
    path = os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])
    env = {"PYTHONPATH": path, "MYELIN_IDENTITY__MAX_VALUES": "2"}
    process = ServerProcess("identity", repository, tmp_path, env=env)
    try:
        with grpc.insecure_channel(process.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            health = health_pb2_grpc.HealthStub(channel)
            eventually(lambda: health.Check(health_pb2.HealthCheckRequest(service=plugin.SERVICE)).status == 1)
            ok = call(channel, plugin.ECHO, echo(MODEL, 1.0, 2.0))
            refused = call(channel, plugin.ECHO, echo(MODEL, 1.0, 2.0, 3.0))
    finally:
        assert process.terminate() == 0
    assert ok.code is grpc.StatusCode.OK
    assert (refused.code, "the limit is 2" in refused.details) == (INVALID, True), refused.details


def test_its_settings_section_is_validated_by_its_model(plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYELIN_IDENTITY__MAX_VALUES", "5")
    assert Settings(service="identity").section("identity") == plugin.IdentitySettings(max_values=5)
    monkeypatch.setenv("MYELIN_IDENTITY__MAX_VALUES", "0")
    with pytest.raises(ValueError, match="MYELIN_IDENTITY__"):
        Settings(service="identity")
