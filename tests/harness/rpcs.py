"""RPC tables: calling any RPC with any bytes, and the bad requests every service shares.

`call` sends any bytes to any method through a generic channel (identity serializers), so a test can
send what no stub would: undecodable bytes, over-limit payloads. A `ServiceCase` (one per family, in
tests/harness/families/) names the repository fixture that holds the family's models, well-formed
requests that must always succeed, its own bad requests with the exact status and message each must
get, and hypothesis strategies for its RPCs; what every service shares (Models, KServe v2, health)
is derived from the case here.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import strategies as st

from harness.codes import DOCUMENTED, INVALID, MESSAGE_LIMIT, NOT_FOUND, OK, TIMEOUT, TOO_BIG, UNDECODABLE
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import common_pb2, models_pb2

KSERVE = "inference.GRPCInferenceService"
MODELS = "myelin_api.v1.Models"
HEALTH = "grpc.health.v1.Health"
SHARED_SERVICES = (MODELS, KSERVE, HEALTH)
Tensor = pb.ModelInferRequest.InferInputTensor
Request = tuple[str, bytes]  # (method, serialized request): what the soak sends


@dataclass(frozen=True)
class Rpc:
    method: str  # "/package.Service/Method"
    request: type[Message]
    client_streaming: bool
    server_streaming: bool


def rpc(method: str) -> Rpc:
    """The RPC `/package.Service/Method`, from the descriptors the generated code registered."""
    service, _, name = method.lstrip("/").partition("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    return Rpc(method, GetMessageClass(descriptor.input_type), descriptor.client_streaming, descriptor.server_streaming)


def service_rpcs(service: str) -> list[Rpc]:
    descriptor = descriptor_pool.Default().FindServiceByName(service)
    return [rpc(f"/{service}/{m.name}") for m in descriptor.methods]


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[bytes] = field(default_factory=list)


def call(
    channel: grpc.Channel,
    method: str,
    request: Message | bytes,
    *,
    timeout: float = TIMEOUT,
    metadata: Sequence[tuple[str, str]] = (),
    max_responses: int = 64,
) -> Outcome:
    """Send `request` (a message, or raw bytes as they are) and return the status and raw responses.

    A server stream is read up to `max_responses` (health's Watch never ends by itself)."""
    target = rpc(method)
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    identity: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
    try:
        if target.client_streaming:
            make = channel.stream_stream if target.server_streaming else channel.stream_unary
            answer = make(method, **identity)(iter([payload]), timeout=timeout, metadata=metadata)
        else:
            make = channel.unary_stream if target.server_streaming else channel.unary_unary
            answer = make(method, **identity)(payload, timeout=timeout, metadata=metadata)
        if not target.server_streaming:
            return Outcome(OK, "", [answer])
        responses: list[bytes] = []
        for response in answer:
            responses.append(response)
            if len(responses) >= max_responses:
                answer.cancel()
                break
        return Outcome(OK, "", responses)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED and target.server_streaming:
            return Outcome(OK, "", [])  # our own cancel after max_responses
        return Outcome(error.code(), error.details() or "")


def assert_documented(outcome: Outcome, what: str) -> None:
    """A documented status; an error says what to change, without internals."""
    assert outcome.code in DOCUMENTED, f"{what}: {outcome.code.name} {outcome.details}"
    if outcome.code is not OK:
        assert outcome.details.strip(), f"{what}: {outcome.code.name} without a message"
        assert "Traceback" not in outcome.details and 'File "' not in outcome.details, outcome.details
        assert len(outcome.details) < 2000, f"{what}: a {len(outcome.details)}-character message"


@dataclass(frozen=True)
class Bad:
    """A bad request and the exact answer it must get."""

    id: str
    method: str
    request: Message | bytes
    code: grpc.StatusCode
    message: str  # must appear in the status details


@dataclass(frozen=True)
class GraphInput:
    name: str
    datatype: str
    axes: tuple[str | int, ...]  # each axis: its symbolic name in the graph, or its fixed length


@dataclass(frozen=True)
class Graph:
    """A graph KServe reaches, as the fuzzing sees it: its inputs, and values safely inside each
    integer input's range (out-of-range ones are drawn from far outside any model's)."""

    endpoint: str  # the KServe model name: `<model>` or `<model>.<graph>`
    inputs: tuple[GraphInput, ...]
    values: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceCase:
    family: str
    repository_fixture: str  # a session fixture (tests/conftest.py) building a repository of this family
    model: str  # a model every repository of the fixture holds
    services: tuple[str, ...]  # the family's own gRPC services
    infer: pb.ModelInferRequest  # a well-formed KServe ModelInfer for `model`
    good: tuple[tuple[str, Message], ...]  # the family's own well-formed requests
    bad: tuple[Bad, ...]  # the family's own bad requests
    fuzz: tuple[tuple[str, st.SearchStrategy[Message]], ...]  # hypothesis strategies for its RPCs
    graphs: tuple[Graph, ...] = ()  # every graph KServe reaches in its repository fixture, every input

    def well_formed(self) -> list[tuple[str, Message]]:
        """What background traffic sends: the family's requests and the shared services' ones."""
        return [
            *self.good,
            (f"/{KSERVE}/ModelInfer", self.infer),
            (f"/{KSERVE}/ModelReady", pb.ModelReadyRequest(name=self.model)),
            (f"/{MODELS}/GetModel", models_pb2.GetModelRequest(model=common_pb2.ModelRef(name=self.model))),
            (f"/{HEALTH}/Check", health_pb2.HealthCheckRequest()),
        ]

    def all_bad(self) -> list[Bad]:
        return [*self.bad, *shared_bad(self)]

    def methods(self) -> list[str]:
        return [r.method for service in (*self.services, *SHARED_SERVICES) for r in service_rpcs(service)]


# Names that look like paths, or are not names at all: every RPC that takes a model name refuses them.
PATH_NAMES = (
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "mnist-cnn/../../etc",
    "..\\..\\windows",
    "%2e%2e%2fetc%2fpasswd",
    "file:///etc/passwd",
    "mnist-cnn\x00.onnx",
    "mnist-cnn\n",
    "~root",
    "a" * 129,
)


def one_of_each_category() -> dict[str, str]:
    """The first non-ASCII character of every Unicode general category a proto string can carry (all
    but surrogates, which UTF-8 cannot encode)."""
    found: dict[str, str] = {}
    for point in range(0x80, sys.maxunicode + 1):
        category = unicodedata.category(chr(point))
        if category != "Cs":
            found.setdefault(category, chr(point))
        if len(found) == 29:  # Unicode's 30 general categories, less Cs
            break
    return found


UNICODE = one_of_each_category()


def invalid_names(model: str) -> list[tuple[str, str]]:
    """(case id, name) for names the syntax check must refuse."""
    names = [(f"path {name[:24]!r}", name) for name in PATH_NAMES]
    names += [(f"unicode {cat}", f"{model}{char}") for cat, char in sorted(UNICODE.items())]
    return names


def with_fields(request: pb.ModelInferRequest, **fields: Any) -> pb.ModelInferRequest:
    copy = pb.ModelInferRequest()
    copy.CopyFrom(request)
    for name, value in fields.items():
        copy.ClearField(name)
        if isinstance(value, list):
            getattr(copy, name).extend(value)
        else:
            setattr(copy, name, value)
    return copy


def shared_bad(case: ServiceCase) -> list[Bad]:
    """Bad requests to the services every family has (Models, KServe v2, health), for `case`'s model."""
    model, infer = case.model, case.infer
    first = infer.inputs[0]
    name_required = "model.name is required"

    def first_as(**fields: Any) -> Any:
        """The request with its first input's header changed."""
        tensor = Tensor(name=first.name, datatype=first.datatype, shape=first.shape)
        for key, value in fields.items():
            if key == "shape":
                tensor.ClearField("shape")
                tensor.shape.extend(value)
            elif isinstance(value, Message):
                getattr(tensor, key).CopyFrom(value)
            else:
                setattr(tensor, key, value)
        return with_fields(infer, inputs=[tensor, *infer.inputs[1:]])

    bad = [
        Bad("GetModel no name", f"/{MODELS}/GetModel", models_pb2.GetModelRequest(), INVALID, name_required),
        Bad("GetModel unknown", f"/{MODELS}/GetModel", get_model("no-such-model"), NOT_FOUND, "not found"),
        Bad("GetModel no version", f"/{MODELS}/GetModel", get_model(model, 999), NOT_FOUND, "has no version 999"),
        Bad(
            "GetModel version 2**63-1", f"/{MODELS}/GetModel", get_model(model, 2**63 - 1), NOT_FOUND, "has no version"
        ),
        Bad("ModelReady no name", f"/{KSERVE}/ModelReady", pb.ModelReadyRequest(), INVALID, name_required),
        Bad("ModelReady unknown", f"/{KSERVE}/ModelReady", pb.ModelReadyRequest(name="nope"), NOT_FOUND, "not found"),
        Bad(
            "ModelReady version text",
            f"/{KSERVE}/ModelReady",
            pb.ModelReadyRequest(name=model, version="latest"),
            INVALID,
            "decimal version number",
        ),
        Bad(
            "ModelMetadata fullwidth digit",
            f"/{KSERVE}/ModelMetadata",
            pb.ModelMetadataRequest(name=model, version="\uff11"),
            INVALID,
            "decimal version number",
        ),
        Bad(
            "ModelMetadata version -1",
            f"/{KSERVE}/ModelMetadata",
            pb.ModelMetadataRequest(name=model, version="-1"),
            INVALID,
            "decimal version number",
        ),
        Bad(
            "ModelMetadata huge version",
            f"/{KSERVE}/ModelMetadata",
            pb.ModelMetadataRequest(name=model, version="9" * 40),
            NOT_FOUND,
            "has no version",
        ),
        Bad(
            "ModelMetadata unknown graph",
            f"/{KSERVE}/ModelMetadata",
            pb.ModelMetadataRequest(name=f"{model}.nograph"),
            NOT_FOUND,
            "has no graph 'nograph'",
        ),
        Bad("ModelInfer empty", f"/{KSERVE}/ModelInfer", pb.ModelInferRequest(), INVALID, "model.name is required"),
        Bad(
            "ModelInfer no inputs",
            f"/{KSERVE}/ModelInfer",
            with_fields(infer, inputs=[], raw_input_contents=[]),
            INVALID,
            "inputs is empty",
        ),
        Bad(
            "ModelInfer input named wrong",
            f"/{KSERVE}/ModelInfer",
            with_fields(
                infer, inputs=[Tensor(name="../x", datatype=first.datatype, shape=first.shape), *infer.inputs[1:]]
            ),
            INVALID,
            "the graph's inputs are",
        ),
        Bad(
            "ModelInfer datatype unknown",
            f"/{KSERVE}/ModelInfer",
            with_fields(
                infer, inputs=[Tensor(name=first.name, datatype="FP128", shape=first.shape), *infer.inputs[1:]]
            ),
            INVALID,
            "has datatype FP128",
        ),
        Bad(
            "ModelInfer datatype empty",
            f"/{KSERVE}/ModelInfer",
            first_as(datatype=""),
            INVALID,
            "has datatype (unset)",
        ),
        Bad(
            "ModelInfer rank wrong",
            f"/{KSERVE}/ModelInfer",
            first_as(shape=[*first.shape, 1]),
            INVALID,
            "takes rank",
        ),
        Bad(
            "ModelInfer negative dimension",
            f"/{KSERVE}/ModelInfer",
            with_fields(
                infer,
                inputs=[
                    Tensor(name=first.name, datatype=first.datatype, shape=[-1, *first.shape[1:]]),
                    *infer.inputs[1:],
                ],
            ),
            INVALID,
            "negative dimension",
        ),
        Bad(
            "ModelInfer 2**62 rows",
            f"/{KSERVE}/ModelInfer",
            with_fields(
                infer,
                inputs=[
                    Tensor(name=first.name, datatype=first.datatype, shape=[2**62, *first.shape[1:]]),
                    *infer.inputs[1:],
                ],
            ),
            INVALID,
            "bytes, got",
        ),
        Bad(
            "ModelInfer raw and contents",
            f"/{KSERVE}/ModelInfer",
            first_as(contents=pb.InferTensorContents(fp32_contents=[0.0])),
            INVALID,
            "send one or the other",
        ),
        Bad(
            "ModelInfer raw count",
            f"/{KSERVE}/ModelInfer",
            with_fields(infer, raw_input_contents=[*infer.raw_input_contents, b""]),
            INVALID,
            "send one per input",
        ),
        Bad(
            "ModelInfer raw truncated",
            f"/{KSERVE}/ModelInfer",
            with_fields(infer, raw_input_contents=[infer.raw_input_contents[0][:-1], *infer.raw_input_contents[1:]]),
            INVALID,
            "raw bytes, got",
        ),
        Bad(
            "ModelInfer input twice",
            f"/{KSERVE}/ModelInfer",
            with_fields(
                infer,
                inputs=[*infer.inputs, infer.inputs[0]],
                raw_input_contents=[*infer.raw_input_contents, infer.raw_input_contents[0]],
            ),
            INVALID,
            "is given twice",
        ),
        Bad(
            "ModelInfer unknown output",
            f"/{KSERVE}/ModelInfer",
            with_fields(infer, outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="/etc/passwd")]),
            INVALID,
            "is not an output of this graph",
        ),
        Bad(
            "ModelInfer version text",
            f"/{KSERVE}/ModelInfer",
            with_fields(infer, model_version="1.0"),
            INVALID,
            "decimal version number",
        ),
        Bad(
            "ModelInfer over the size limit",
            f"/{KSERVE}/ModelInfer",
            with_fields(infer, raw_input_contents=[bytes(MESSAGE_LIMIT + 1), *infer.raw_input_contents[1:]]),
            TOO_BIG,
            "larger than max",
        ),
        Bad(
            "Health unknown service",
            f"/{HEALTH}/Check",
            health_pb2.HealthCheckRequest(service="no.Such"),
            NOT_FOUND,
            "unknown service",
        ),
        Bad(
            "Health path service",
            f"/{HEALTH}/Check",
            health_pb2.HealthCheckRequest(service="../../etc/passwd"),
            NOT_FOUND,
            "unknown service",
        ),
    ]
    bad.append(
        Bad(
            "GetModel over its size limit",
            f"/{MODELS}/GetModel",
            get_model("x" * 70_000),  # GetModel takes names and a version: 64 KiB, refused before parsing
            TOO_BIG,
            "this method takes at most 65,536",
        )
    )
    for case_id, name in invalid_names(model):
        bad += [
            Bad(f"GetModel {case_id}", f"/{MODELS}/GetModel", get_model(name), INVALID, "not a valid model name"),
            Bad(
                f"ModelInfer {case_id}",
                f"/{KSERVE}/ModelInfer",
                with_fields(infer, model_name=name),
                INVALID,
                "not a valid model name",
            ),
        ]
    # Bytes that are not the method's message, to every unary method of every shared service.
    for service in SHARED_SERVICES:
        for target in service_rpcs(service):
            if not target.client_streaming and not target.server_streaming:
                short = target.method.rsplit("/", 1)[1]
                bad.append(Bad(f"{short} undecodable", target.method, UNDECODABLE, INVALID, "not a valid message"))
    return bad


def get_model(name: str, version: int = 0) -> models_pb2.GetModelRequest:
    return models_pb2.GetModelRequest(model=common_pb2.ModelRef(name=name, version=version))


# KServe ModelInfer requests for a family's graphs, and the bad ones it must refuse.


def kserve_infer(model: str, name: str, array: np.ndarray, datatype: str) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[Tensor(name=name, datatype=datatype, shape=list(array.shape))],
        raw_input_contents=[np.ascontiguousarray(array).tobytes()],
    )


INFER = "/inference.GRPCInferenceService/ModelInfer"
RANGE = "its values must lie in [0, "


def graph_request(graph: Graph, lengths: dict[str, int], **arrays: Any) -> pb.ModelInferRequest:
    """A raw ModelInfer for `graph`: each input zeros at the given axis lengths, unless given."""
    request = pb.ModelInferRequest(model_name=graph.endpoint)
    for spec in graph.inputs:
        dtype = {"INT64": "<i8", "BOOL": "?", "FP32": "<f4"}[spec.datatype]
        shape = tuple(lengths[a] if isinstance(a, str) else a for a in spec.axes)
        array = np.asarray(arrays.get(spec.name, np.zeros(shape)), dtype=dtype)
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


def kserve_bad(graph: Graph, lengths: dict[str, int], cases: list[tuple[str, dict[str, Any], str]]) -> list[Bad]:
    """ModelInfer cases for one graph: (id, axis lengths (ints) and input values that differ, message fragment)."""
    bad = []
    for case_id, changes, message in cases:
        axes = {k: v for k, v in changes.items() if k in lengths and isinstance(v, int)}  # else an input's values
        arrays = {k: v for k, v in changes.items() if k not in axes}
        request = graph_request(graph, {**lengths, **axes}, **arrays)
        bad.append(Bad(f"ModelInfer {graph.endpoint} {case_id}", INFER, request, INVALID, message))
    return bad


def soak_requests(model: str, *own: tuple[str, Message]) -> list[Request]:
    """What the soak sends a family: its `own` requests, then GetModel of `model` and a health check."""
    shared = [(f"/{MODELS}/GetModel", get_model(model)), (f"/{HEALTH}/Check", health_pb2.HealthCheckRequest())]
    return [(method, message.SerializeToString()) for method, message in (*own, *shared)]
