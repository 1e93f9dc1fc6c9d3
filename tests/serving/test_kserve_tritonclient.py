"""A stock KServe v2 client (tritonclient.grpc, unmodified) against every service.

Adding a family's service here is one entry in SERVICES: the session fixture that builds its model
repository, and the KServe calls to make (endpoint name, graph file, inputs). The expected answer
of every call is the graph itself, run by onnxruntime in this process on the same inputs.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from myelin_serving.tensors import datatype_of
from myelin_testkit import KServeCall, ServerThread, run_tritonclient, settings_for, tritonclient_job


@dataclass(frozen=True)
class ServiceCase:
    family: str
    repository_fixture: str
    calls: Callable[[Path], list[KServeCall]]


def digits(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 28, 28), dtype=np.float32)  # (B, 28, 28) in [0, 1)


def classifier_calls(repository: Path) -> list[KServeCall]:
    return [
        KServeCall("mnist-cnn", repository / "mnist-cnn" / "1" / "model.onnx", {"image": digits(3, 1)}),
        KServeCall("mnist-mlp", repository / "mnist-mlp" / "1" / "model.onnx", {"image": digits(1, 2)}),
        KServeCall("mnist-mlp.model", repository / "mnist-mlp" / "1" / "model.onnx", {"image": digits(2, 3)}),
    ]


SERVICES = [
    ServiceCase("classifier", "classifier_repository", classifier_calls),
]


def expected_outputs(call: KServeCall) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(call.graph_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, call.inputs), strict=True))


@pytest.mark.parametrize("case", SERVICES, ids=[c.family for c in SERVICES])
def test_tritonclient_health_metadata_and_inference(case: ServiceCase, request: pytest.FixtureRequest) -> None:
    repository: Path = request.getfixturevalue(case.repository_fixture)
    calls = case.calls(repository)
    with ServerThread(settings_for(repository, service=case.family)) as server:
        report = run_tritonclient(tritonclient_job(server.target, calls))
    assert report["live"] == {"ok": True}
    assert report["ready"] == {"ok": True}
    assert report["server_metadata"]["ok"]["name"] == "myelin"
    for call, answer in zip(calls, report["models"], strict=True):
        assert answer["ready"] == {"ok": True}, call.name
        metadata = answer["metadata"]["ok"]
        assert metadata["name"] == call.name and metadata["platform"] == "onnxruntime_onnx"
        assert metadata["versions"] == ["1"]
        assert [i["name"] for i in metadata["inputs"]] == list(call.inputs)
        result = answer["infer"]["ok"]
        assert (result["model_name"], result["model_version"], result["id"]) == (call.name, "1", "probe-1")
        expected = expected_outputs(call)
        assert list(result["outputs"]) == list(expected)
        for name, array in expected.items():
            got = result["outputs"][name]
            assert got["datatype"] == datatype_of(array) and got["shape"] == list(array.shape)
            np.testing.assert_allclose(np.array(got["values"]).reshape(array.shape), array, rtol=1e-5, atol=1e-6)


def test_tritonclient_sees_not_found_and_invalid_argument(classifier_server: ServerThread) -> None:
    unknown = {"name": "mnist-vit", "inputs": []}
    wrong_shape = {
        "name": "mnist-cnn",
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [1, 20, 28], "data": base64.b64encode(bytes(2240)).decode()}
        ],
    }
    report = run_tritonclient({"target": classifier_server.target, "models": [unknown, wrong_shape]})
    missing, bad = report["models"]
    assert missing["ready"]["status"] == "StatusCode.NOT_FOUND"
    assert missing["metadata"]["status"] == "StatusCode.NOT_FOUND" and "mnist-cnn" in missing["metadata"]["message"]
    assert bad["infer"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "axis 1 must be 28" in bad["infer"]["message"]
