"""The stock KServe v2 clients (tritonclient.grpc and tritonclient.http, unmodified) against every service.

Adding a family's service here is one entry in SERVICES: its family name and the session fixture
that builds its model repository. By default every graph of the newest version of every model of
that family is called, with inputs made from the graph's own signature (dynamic axes 1, integers 0,
booleans true, floats random); a family may pass its own calls instead. The expected answer of
every call is the graph itself, run by onnxruntime in this process on the same inputs. Each service
is called three ways: over gRPC, and over HTTP/REST with binary tensor data and with JSON tensors.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from harness.servers import ServerThread, settings_for
from harness.tritonclient import KServeCall, run_tritonclient, tritonclient_job
from myelin_serving.tensors import datatype_of

NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def signature_inputs(graph_file: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs any graph accepts: its own signature, dynamic axes 1, integers 0, booleans true."""
    session = ort.InferenceSession(str(graph_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        if arg.type == "tensor(string)":
            inputs[arg.name] = np.full(shape, "myelin", dtype=object)
            continue
        dtype = NUMPY_TYPES[arg.type]
        if np.issubdtype(dtype, np.floating):
            inputs[arg.name] = rng.random(shape).astype(dtype)
        elif dtype is np.bool_:
            inputs[arg.name] = np.ones(shape, dtype=bool)
        else:
            inputs[arg.name] = np.zeros(shape, dtype=dtype)
    return inputs


def signature_calls(repository: Path, family: str) -> list[KServeCall]:
    """One call per graph of the newest version of every model of `family` in `repository`."""
    newest: dict[str, Path] = {}
    for manifest_path in repository.glob("*/*/model.json"):
        if not manifest_path.parent.name.isdigit():
            continue
        manifest = json.loads(manifest_path.read_text())
        current = newest.get(manifest["name"])
        if manifest["family"] == family and (current is None or int(current.parent.name) < manifest["version"]):
            newest[manifest["name"]] = manifest_path
    calls = []
    for name, manifest_path in sorted(newest.items()):
        graphs = json.loads(manifest_path.read_text())["graphs"]
        for graph, entry in graphs.items():
            graph_file = manifest_path.parent / entry["file"]
            endpoint = name if len(graphs) == 1 else f"{name}.{graph}"
            calls.append(KServeCall(endpoint, graph_file, signature_inputs(graph_file)))
    return calls


@dataclass(frozen=True)
class ServiceCase:
    family: str
    repository_fixture: str
    calls: Callable[[Path], list[KServeCall]] | None = field(default=None)  # None: signature_calls

    def calls_for(self, repository: Path) -> list[KServeCall]:
        return self.calls(repository) if self.calls else signature_calls(repository, self.family)


def digits(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 28, 28), dtype=np.float32)  # (B, 28, 28) in [0, 1)


def classifier_calls(repository: Path) -> list[KServeCall]:
    return [
        KServeCall("mnist-cnn", repository / "mnist-cnn" / "1" / "model.onnx", {"image": digits(3, 1)}),
        KServeCall("mnist-mlp", repository / "mnist-mlp" / "1" / "model.onnx", {"image": digits(1, 2)}),
        KServeCall("mnist-mlp.model", repository / "mnist-mlp" / "1" / "model.onnx", {"image": digits(2, 3)}),
        *signature_calls(repository, "classifier"),
    ]


def generator_calls(repository: Path) -> list[KServeCall]:
    """The GPT's step graph on a 2-token prompt from an empty cache, then every graph's signature call."""
    version_dir = repository / "generator-gpt-shakespeare" / "1"
    decoder = json.loads((version_dir / "model.json").read_text())["decoder"]
    heads, head_dim = decoder["cache_shape"]["heads"], decoder["cache_shape"]["head_dim"]
    keys, values = np.zeros((1, heads, head_dim, 0), np.float32), np.zeros((1, heads, 0, head_dim), np.float32)
    prompt = {
        "input_ids": np.array([[3, 5]], np.int64),
        "padding": np.zeros(1, np.int64),
        "length": np.array(0, np.int64),
        **{name: keys if name.endswith(".key") else values for name in decoder["cache_inputs"]},
    }
    return [
        KServeCall("generator-gpt-shakespeare.step", version_dir / "step.onnx", prompt),
        *signature_calls(repository, "generator"),
    ]


def embedder_calls(repository: Path) -> list[KServeCall]:
    """Both graphs of every word2vec model: ids to unit vectors, and queries to the top-K neighbours
    (one row over the whole vocabulary with nothing excluded, one limited to the first 50 ids with
    two excluded; signature inputs would ask for a limit of 0, where every score is -inf)."""
    calls = []
    rng = np.random.default_rng(4)
    for manifest_path in sorted(repository.glob("word2vec-*/1/model.json")):
        manifest = json.loads(manifest_path.read_text())
        name, folder, embedding = manifest["name"], manifest_path.parent, manifest["embedding"]
        ids = np.array([0, 3, embedding["vocab_size"] - 1], dtype=np.int64)
        calls.append(KServeCall(f"{name}.lookup", folder / "lookup.onnx", {"ids": ids}))
        neighbours = {
            "queries": rng.standard_normal((2, embedding["dim"])).astype(np.float32),
            "exclude": np.array([[-1, -1], [0, 7]], dtype=np.int64),
            "limit": np.array([embedding["vocab_size"], 50], dtype=np.int64),
        }
        calls.append(KServeCall(f"{name}.neighbours", folder / "neighbours.onnx", neighbours))
    return calls


SERVICES = [
    ServiceCase("classifier", "classifier_repository", classifier_calls),
    ServiceCase("generator", "generator_repository", generator_calls),
    # translator-tatoeba.encoder and translator-tatoeba.decoder, the decoder with a one-position cache.
    ServiceCase("translator", "translator_repository"),
    ServiceCase("embedder", "word2vec_repository", embedder_calls),
]


# How tritonclient reaches the service: the job's options (tritonclient_probe.py).
TRANSPORTS = {
    "grpc": {},
    "http-binary": {"protocol": "http", "binary": True},
    "http-json": {"protocol": "http", "binary": False},
}


def expected_outputs(call: KServeCall) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(call.graph_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, call.inputs), strict=True))


@pytest.mark.parametrize("case", SERVICES, ids=[c.family for c in SERVICES])
def test_tritonclient_health_metadata_and_inference(case: ServiceCase, request: pytest.FixtureRequest) -> None:
    repository: Path = request.getfixturevalue(case.repository_fixture)
    calls = case.calls_for(repository)
    assert calls, f"no {case.family} models in {repository}"
    with ServerThread(settings_for(repository, service=case.family, http_port=0)) as server:
        http = server.http_url.removeprefix("http://")
        reports = {
            transport: run_tritonclient(tritonclient_job(http if options else server.target, calls, **options))
            for transport, options in TRANSPORTS.items()
        }
    for transport, report in reports.items():
        assert report["live"] == {"ok": True}, transport
        assert report["ready"] == {"ok": True}, transport
        assert report["server_metadata"]["ok"]["name"] == "myelin", transport
        check_answers(calls, report, binary_outputs=transport == "http-binary", json_outputs=transport == "http-json")


def check_answers(calls: list[KServeCall], report: dict[str, Any], *, binary_outputs: bool, json_outputs: bool) -> None:
    for call, answer in zip(calls, report["models"], strict=True):
        version = call.graph_file.parent.name  # the newest version is the one served
        assert answer["ready"] == {"ok": True}, call.name
        metadata = answer["metadata"]["ok"]
        assert metadata["name"] == call.name and metadata["platform"] == "onnxruntime_onnx"
        assert metadata["versions"][-1] == version
        assert [i["name"] for i in metadata["inputs"]] == list(call.inputs)
        result = answer["infer"]["ok"]
        assert (result["model_name"], result["model_version"], result["id"]) == (call.name, version, "probe-1")
        expected = expected_outputs(call)
        assert list(result["outputs"]) == list(expected)
        assert set(result["binary"].values()) == {binary_outputs}, "HTTP outputs as the request asked"
        for name, array in expected.items():
            got = result["outputs"][name]
            assert got["datatype"] == datatype_of(array) and got["shape"] == list(array.shape)
            if got["datatype"] == "BYTES":
                assert got["values"] == [str(v) for v in array.ravel()]
            else:
                values = np.array(got["values"]).reshape(array.shape)
                if json_outputs and array.dtype.kind == "f":  # JSON has no infinities or NaN: null, read as NaN
                    array = np.where(np.isfinite(array), array, np.nan)
                np.testing.assert_allclose(values, array, rtol=1e-5, atol=1e-6)


def test_tritonclient_sees_not_found_and_invalid_argument(classifier_repository: Path) -> None:
    unknown = {"name": "mnist-vit", "inputs": []}
    wrong_shape = {
        "name": "mnist-cnn",
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [1, 20, 28], "data": base64.b64encode(bytes(2240)).decode()}
        ],
    }
    with ServerThread(settings_for(classifier_repository, http_port=0)) as server:
        report = run_tritonclient({"target": server.target, "models": [unknown, wrong_shape]})
        http = server.http_url.removeprefix("http://")
        rest = run_tritonclient({"target": http, "protocol": "http", "models": [unknown, wrong_shape]})
    missing, bad = report["models"]
    assert missing["ready"]["status"] == "StatusCode.NOT_FOUND"
    assert missing["metadata"]["status"] == "StatusCode.NOT_FOUND" and "mnist-cnn" in missing["metadata"]["message"]
    assert bad["infer"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "axis 1 must be 28" in bad["infer"]["message"]
    missing, bad = rest["models"]  # over HTTP: the same table's statuses, the same messages
    assert missing["ready"] == {"ok": False}  # KServe REST: readiness is the status code, 404 here
    assert missing["metadata"]["status"] == "404" and "mnist-cnn" in missing["metadata"]["message"]
    assert bad["infer"]["status"] == "400" and "axis 1 must be 28" in bad["infer"]["message"]
