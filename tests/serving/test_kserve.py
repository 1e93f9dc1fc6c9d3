"""The Open Inference Protocol on a real server through our generated stubs, and its naming rules."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from harness.servers import ServerThread, broken_version, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.kserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from myelin_client import Client
from myelin_serving.errors import NotFound
from myelin_serving.kserve import InferenceProtocol
from myelin_serving.repository import LoadContext, LoadedModel, ModelManager, ModelVersion
from myelin_serving.runtime import RuntimeOptions
from myelin_serving.settings import BatchingSettings
from myelin_serving.tensors import RequestTensor

Tensor = pb.ModelInferRequest.InferInputTensor
PIXELS = np.random.default_rng(5).random((2, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def stub(classifier_server: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(classifier_server.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def expected(repository: Path, model: str, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": pixels})[0]


def raw_request(pixels: np.ndarray = PIXELS, **fields: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name="mnist-cnn",
        inputs=[Tensor(name="image", datatype="FP32", shape=list(pixels.shape))],
        raw_input_contents=[pixels.astype("<f4").tobytes()],
    )
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def test_raw_request_gets_a_raw_answer(stub: pb_grpc.GRPCInferenceServiceStub, classifier_repository: Path) -> None:
    response = stub.ModelInfer(raw_request(id="req-7"), timeout=10)
    assert (response.model_name, response.model_version, response.id) == ("mnist-cnn", "1", "req-7")
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", [2, 10])
    assert not output.HasField("contents")
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(got, expected(classifier_repository, "mnist-cnn", PIXELS), rtol=1e-5, atol=1e-6)


def test_typed_request_gets_a_typed_answer(stub: pb_grpc.GRPCInferenceServiceStub, classifier_repository: Path) -> None:
    request = pb.ModelInferRequest(
        model_name="mnist-mlp",
        model_version="1",
        inputs=[
            Tensor(
                name="image",
                datatype="FP32",
                shape=[1, 28, 28],
                contents=pb.InferTensorContents(fp32_contents=PIXELS[0].ravel()),
            )
        ],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")],
    )
    response = stub.ModelInfer(request, timeout=10)
    assert not response.raw_output_contents
    got = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(1, 10)
    np.testing.assert_allclose(got, expected(classifier_repository, "mnist-mlp", PIXELS[:1]), rtol=1e-5, atol=1e-6)


def test_health_metadata_and_reflection(
    classifier_server: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10).name == "myelin"
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="mnist-cnn"), timeout=10)
    assert (metadata.platform, list(metadata.versions)) == ("onnxruntime_onnx", ["1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("image", "FP32", [-1, 28, 28])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [("probabilities", "FP32", [-1, 10])]
    with grpc.insecure_channel(classifier_server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "inference.GRPCInferenceService" in services and "grpc.health.v1.Health" in services
    with Client(classifier_server.target) as client:
        assert client.health("inference.GRPCInferenceService") == "SERVING"


def infer_with(**changes: object) -> pb.ModelInferRequest:
    request = raw_request(PIXELS[:1])
    for name, value in changes.items():
        if name == "inputs":
            del request.inputs[:]
            request.inputs.extend(value)  # type: ignore[arg-type]
        elif name == "raw_input_contents":
            del request.raw_input_contents[:]
            request.raw_input_contents.extend(value)  # type: ignore[arg-type]
        elif name == "outputs":
            request.outputs.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    return request


ONE = PIXELS[:1].tobytes()
BAD_INFERENCES = [
    ("unknown model", infer_with(model_name="mnist-vit"), grpc.StatusCode.NOT_FOUND, "serves: mnist-cnn, mnist-mlp"),
    ("unknown version", infer_with(model_version="9"), grpc.StatusCode.NOT_FOUND, "no version 9"),
    ("version not a number", infer_with(model_version="v1"), grpc.StatusCode.INVALID_ARGUMENT, "decimal version"),
    ("path-like name", infer_with(model_name="../etc"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid model name"),
    (
        "unknown graph",
        infer_with(model_name="mnist-cnn.decoder"),
        grpc.StatusCode.NOT_FOUND,
        "no graph 'decoder'; graphs: model",
    ),
    ("no inputs", infer_with(inputs=[], raw_input_contents=[]), grpc.StatusCode.INVALID_ARGUMENT, "inputs is empty"),
    (
        "wrong input name",
        infer_with(inputs=[Tensor(name="pixels", datatype="FP32", shape=[1, 28, 28])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the graph's inputs are: image",
    ),
    (
        "input twice",
        infer_with(
            inputs=[Tensor(name="image", datatype="FP32", shape=[1, 28, 28])] * 2, raw_input_contents=[ONE, ONE]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "given twice",
    ),
    (
        "raw entries do not match inputs",
        infer_with(raw_input_contents=[ONE, ONE]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 entries for 1 inputs",
    ),
    (
        "raw and typed mixed",
        infer_with(
            inputs=[
                Tensor(
                    name="image",
                    datatype="FP32",
                    shape=[1, 28, 28],
                    contents=pb.InferTensorContents(fp32_contents=[0.0] * 784),
                )
            ]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "send one or the other",
    ),
    (
        "no data at all",
        infer_with(raw_input_contents=[], inputs=[Tensor(name="image", datatype="FP32", shape=[1, 28, 28])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "has no data",
    ),
    (
        "wrong datatype",
        infer_with(inputs=[Tensor(name="image", datatype="UINT8", shape=[1, 28, 28])], raw_input_contents=[bytes(784)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "has datatype UINT8; the graph takes FP32",
    ),
    (
        "byte length",
        infer_with(raw_input_contents=[ONE[:-4]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "need 3136 raw bytes, got 3132",
    ),
    (
        "empty batch",
        infer_with(inputs=[Tensor(name="image", datatype="FP32", shape=[0, 28, 28])], raw_input_contents=[b""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the batch \\(axis .*\\) is empty",
    ),
    (
        "too many rows",
        infer_with(
            inputs=[Tensor(name="image", datatype="FP32", shape=[257, 28, 28])], raw_input_contents=[bytes(257 * 3136)]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the limit is 256",
    ),
    (
        "unknown output",
        infer_with(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not an output of this graph: probabilities",
    ),
    (
        "classification output",
        infer_with(
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(
                    name="probabilities", parameters={"classification": pb.InferParameter(int64_param=3)}
                )
            ]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'classification' is not supported",
    ),
]


@pytest.mark.parametrize(("case", "request_", "code", "message"), BAD_INFERENCES, ids=[c[0] for c in BAD_INFERENCES])
def test_bad_inference_requests_get_a_clear_status(
    stub: pb_grpc.GRPCInferenceServiceStub,
    case: str,
    request_: pb.ModelInferRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_, timeout=10)
    assert info.value.code() == code
    assert re.search(message, info.value.details())
    assert "Traceback" not in info.value.details()


def test_model_ready_is_false_for_a_failed_version_and_not_found_for_unknown(fresh_repository: Path) -> None:
    broken_version(fresh_repository, "mnist-cnn")
    with ServerThread(settings_for(fresh_repository)) as server, grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert not stub.ModelReady(pb.ModelReadyRequest(name="mnist-cnn", version="2"), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="mnist-cnn", version="1"), timeout=10).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="mnist-cnn"), timeout=10).ready
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="mnist-cnn"), timeout=10).versions == ["1"]
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelReady(pb.ModelReadyRequest(name="mnist-vit"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(raw_request(model_version="2"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "failed" in info.value.details()


def test_server_ready_is_false_without_models(tmp_path: Path) -> None:
    with ServerThread(settings_for(tmp_path)) as server, grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


# Naming for versions with several graphs, on the plain-Python protocol (no gRPC).


async def load_every_graph(version: ModelVersion, context: LoadContext) -> LoadedModel:
    graphs = {name: await context.open_graph(version, name) for name in version.manifest.graphs}
    return LoadedModel(version, graphs, {})  # no batchers: inference runs on a worker thread


def test_a_version_with_several_graphs_has_one_endpoint_per_graph(tmp_path: Path, classifier_repository: Path) -> None:
    version = tmp_path / "pair" / "1"
    shutil.copytree(classifier_repository / "mnist-mlp" / "1", version)
    manifest = json.loads((version / "model.json").read_text())
    graphs = {"encoder": {"file": "model.onnx"}, "decoder_step": {"file": "model.onnx"}}
    (version / "model.json").write_text(json.dumps({**manifest, "name": "pair", "graphs": graphs}))

    async def scenario() -> None:
        context = LoadContext(RuntimeOptions(device="cpu", intra_op_threads=1), BatchingSettings())
        manager = ModelManager(tmp_path, manifest["family"], load_every_graph, context)
        assert (await manager.refresh()).loaded == ["pair/1"]
        protocol = InferenceProtocol(manager, max_request_batch=8)
        assert protocol.endpoint_names() == ["pair.encoder", "pair.decoder_step"]
        with pytest.raises(NotFound, match=r"name one of: pair\.encoder, pair\.decoder_step"):
            protocol.resolve("pair", "")
        assert protocol.model_ready("pair", "") and protocol.model_ready("pair.encoder", "1")
        endpoint = protocol.resolve("pair.decoder_step", "")
        tensor = RequestTensor("image", "FP32", (1, 28, 28), raw=PIXELS[:1].tobytes())
        result = await protocol.infer(endpoint, [tensor], [], timeout=5.0)
        assert result.outputs["probabilities"].shape == (1, 10)
        await manager.close()

    asyncio.run(scenario())
