"""A stock KServe v2 client (tritonclient.grpc, unmodified) against every service.

Adding a family's service here is one entry in SERVICES: the session fixture that builds its model
repository, and the KServe calls to make (endpoint name, graph file, inputs). The expected answer
of every call is the graph itself, run by onnxruntime in this process on the same inputs.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from myelin_serving.tensors import datatype_of, encode_raw
from myelin_testkit import REPO_ROOT, ServerThread, settings_for

TRITONCLIENT_PYTHON = REPO_ROOT / ".venv-tritonclient" / "bin" / "python"
PROBE = Path(__file__).with_name("tritonclient_probe.py")


@dataclass(frozen=True)
class KServeCall:
    name: str  # the KServe model name: `<model>` or `<model>.<graph>`
    graph_file: Path  # the ONNX file behind it, for the expected answer
    inputs: dict[str, np.ndarray]


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


def run_probe(job: dict[str, Any]) -> dict[str, Any]:
    if not TRITONCLIENT_PYTHON.exists():
        pytest.fail(f"{TRITONCLIENT_PYTHON} is missing: run `make setup` (it builds .venv-tritonclient)")
    done = subprocess.run(
        [str(TRITONCLIENT_PYTHON), str(PROBE)], input=json.dumps(job), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def job_for(target: str, calls: list[KServeCall], **extra: Any) -> dict[str, Any]:
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


def expected_outputs(call: KServeCall) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(call.graph_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, call.inputs), strict=True))


@pytest.mark.parametrize("case", SERVICES, ids=[c.family for c in SERVICES])
def test_tritonclient_health_metadata_and_inference(case: ServiceCase, request: pytest.FixtureRequest) -> None:
    repository: Path = request.getfixturevalue(case.repository_fixture)
    calls = case.calls(repository)
    with ServerThread(settings_for(repository, service=case.family)) as server:
        report = run_probe(job_for(server.target, calls))
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
    report = run_probe({"target": classifier_server.target, "models": [unknown, wrong_shape]})
    missing, bad = report["models"]
    assert missing["ready"]["status"] == "StatusCode.NOT_FOUND"
    assert missing["metadata"]["status"] == "StatusCode.NOT_FOUND" and "mnist-cnn" in missing["metadata"]["message"]
    assert bad["infer"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "axis 1 must be 28" in bad["infer"]["message"]
