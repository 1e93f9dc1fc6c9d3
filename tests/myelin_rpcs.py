"""What the reliability suite (tests/reliability/) is made of: calling any RPC with any bytes, the
bad requests and hypothesis strategies every service shares, and the fleet of live servers.

`call` sends any bytes to any method through a generic channel (identity serializers), so a test can
send what no stub would: undecodable bytes, over-limit payloads. A `ServiceCase` (one per family, in
tests/myelin_cases.py) names the repository fixture that holds the family's models, well-formed
requests that must always succeed, its own bad requests with the exact status and message each must
get, and hypothesis strategies for its RPCs; what every service shares (Models, KServe v2, health)
is derived from the case here.
"""

from __future__ import annotations

import math
import sys
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import strategies as st

from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import common_pb2, models_pb2
from myelin_testkit import ServerThread, settings_for

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
# What a bad request may get: never INTERNAL, UNKNOWN, DEADLINE_EXCEEDED (a hang) or UNAVAILABLE.
DOCUMENTED = frozenset({OK, INVALID, NOT_FOUND, TOO_BIG})
# The suite's servers take messages up to this size (settings.max_message_bytes); cheap to exceed.
MESSAGE_LIMIT = 1024 * 1024
TIMEOUT = 20.0

KSERVE = "inference.GRPCInferenceService"
MODELS = "myelin_api.v1.Models"
HEALTH = "grpc.health.v1.Health"
SHARED_SERVICES = (MODELS, KSERVE, HEALTH)
Tensor = pb.ModelInferRequest.InferInputTensor


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
        Bad("GetModel unknown", f"/{MODELS}/GetModel", _get("no-such-model"), NOT_FOUND, "not found"),
        Bad("GetModel no version", f"/{MODELS}/GetModel", _get(model, 999), NOT_FOUND, "has no version 999"),
        Bad("GetModel version 2**63-1", f"/{MODELS}/GetModel", _get(model, 2**63 - 1), NOT_FOUND, "has no version"),
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
            _get("x" * 70_000),  # GetModel takes names and a version: 64 KiB, refused before parsing
            TOO_BIG,
            "this method takes at most 65,536",
        )
    )
    for case_id, name in invalid_names(model):
        bad += [
            Bad(f"GetModel {case_id}", f"/{MODELS}/GetModel", _get(name), INVALID, "not a valid model name"),
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


# Bytes no protobuf message parses: a field tag with wire type 7 (there is none).
UNDECODABLE = b"\xff\xff\xff\xff\x0f"


def _get(name: str, version: int = 0) -> models_pb2.GetModelRequest:
    return models_pb2.GetModelRequest(model=common_pb2.ModelRef(name=name, version=version))


# Hypothesis strategies shared by every family.

# Text of every Unicode category that UTF-8 can carry (surrogates cannot travel in a proto string).
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def model_names(model: str) -> st.SearchStrategy[str]:
    """Mostly near-misses of a real name, often valid-looking, sometimes anything at all."""
    return st.one_of(
        st.just(model),
        ANY_TEXT,
        st.builds(lambda a, b: a + model + b, ANY_TEXT, ANY_TEXT),
        st.sampled_from(PATH_NAMES),
        st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"),
    )


DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)


def infer_requests(case_model: str, infer: pb.ModelInferRequest) -> st.SearchStrategy[pb.ModelInferRequest]:
    """ModelInfer requests: names, datatypes, shapes and payloads from plausible to absurd."""
    first = infer.inputs[0]
    shapes = st.one_of(
        st.just(list(first.shape)),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
        st.lists(st.integers(0, 40), min_size=len(first.shape), max_size=len(first.shape)),
    )
    datatypes = st.one_of(st.sampled_from(DATATYPES), st.just(first.datatype), ANY_TEXT)

    def build(name: str, version: str, datatype: str, shape: list[int], raw: bytes | None, typed: list[float]) -> Any:
        tensor = Tensor(name=first.name, datatype=datatype, shape=shape)
        request = pb.ModelInferRequest(model_name=name, model_version=version, inputs=[tensor])
        if raw is not None:
            request.raw_input_contents.append(raw)
        else:
            tensor.contents.fp32_contents.extend(typed)
        return request

    correct = infer.raw_input_contents[0] if infer.raw_input_contents else b""
    payloads = st.one_of(st.none(), st.just(correct), st.binary(max_size=4096))
    floats = st.lists(st.floats(width=32), max_size=64)
    versions = st.one_of(st.just(""), st.just("1"), ANY_TEXT)
    return st.builds(build, model_names(case_model), versions, datatypes, shapes, payloads, floats)


INTEGERS = {"INT64": "<i8", "INT32": "<i4", "INT16": "<i2", "INT8": "i1", "UINT8": "u1", "UINT64": "<u8"}
FLOATS = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2"}
# Values far outside any model's range: what made onnxruntime raise (a token id of 10**9), or read a
# table from its end (-1), or overflow an index.
OUT_OF_RANGE = (-1, -(2**31), -(2**63), 10**9, 2**31 - 1, 2**63 - 1)


@st.composite
def graph_requests(draw: st.DrawFn, graphs: Sequence[Graph]) -> pb.ModelInferRequest:
    """ModelInfer requests for every input of every graph, shapes and payloads drawn together: one
    length per symbolic axis (mostly small, sometimes empty, past a limit, or disagreeing between
    inputs), payloads that fit the shape (sometimes not), values mostly in range, sometimes far
    outside it, non-finite floats; raw or typed contents, inputs in any order."""
    graph = draw(st.sampled_from(graphs))
    axes = sorted({a for i in graph.inputs for a in i.axes if isinstance(a, str)})
    lengths = {a: draw(st.one_of(st.integers(1, 5), st.sampled_from([0, 129, 257, 1025]))) for a in axes}
    raw = draw(st.booleans())
    inputs = list(graph.inputs)
    if draw(st.booleans()):
        inputs = draw(st.permutations(inputs))
    request = pb.ModelInferRequest(model_name=graph.endpoint)
    for spec in inputs:
        shape = [lengths[a] if isinstance(a, str) else a for a in spec.axes]
        if shape and draw(st.integers(0, 9)) == 0:  # one axis disagrees with the other inputs
            axis = draw(st.integers(0, len(shape) - 1))
            shape[axis] += draw(st.sampled_from([-1, 1]))
            shape[axis] = max(shape[axis], 0)
        if math.prod(shape) > 300_000:  # keep it under the suite's message limit, mostly
            shape = [min(d, 2) for d in shape]
        array = _values(draw, spec, shape, graph.values.get(spec.name, (0, 1)))
        tensor = request.inputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
        if raw:
            data = array.tobytes()
            if draw(st.integers(0, 19)) == 0:
                data = data[: -array.itemsize or None]  # one element short
            request.raw_input_contents.append(data)
        elif spec.datatype in INTEGERS:
            tensor.contents.int64_contents.extend(array.astype(np.int64).ravel().tolist())
        elif spec.datatype == "BOOL":
            tensor.contents.bool_contents.extend(array.ravel().tolist())
        else:
            tensor.contents.fp32_contents.extend(array.astype(np.float32).ravel().tolist())
    return request


def _values(draw: st.DrawFn, spec: GraphInput, shape: list[int], valid: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count = math.prod(shape)
    if spec.datatype in INTEGERS:
        array = rng.integers(valid[0], valid[1] + 1, size=count).astype(INTEGERS[spec.datatype])
        if count and draw(st.booleans()):
            array[rng.integers(count)] = np.array(draw(st.sampled_from(OUT_OF_RANGE))).astype(array.dtype)
    elif spec.datatype == "BOOL":
        array = rng.integers(0, 2, size=count).astype("?")
    else:
        array = rng.standard_normal(count).astype(FLOATS.get(spec.datatype, "<f4"))
        if count and draw(st.integers(0, 3)) == 0:
            array[rng.integers(count)] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3e38]))
    return array.reshape(shape)


def shared_fuzz(case: ServiceCase) -> list[tuple[str, st.SearchStrategy[Message]]]:
    names = model_names(case.model)
    graphs = [(f"/{KSERVE}/ModelInfer", graph_requests(case.graphs))] if case.graphs else []
    return [
        *graphs,
        (f"/{KSERVE}/ModelInfer", infer_requests(case.model, case.infer)),
        (f"/{KSERVE}/ModelReady", st.builds(pb.ModelReadyRequest, name=names, version=ANY_TEXT)),
        (f"/{KSERVE}/ModelMetadata", st.builds(pb.ModelMetadataRequest, name=names, version=ANY_TEXT)),
        (f"/{MODELS}/GetModel", st.builds(_get, names, st.integers(-(2**63), 2**63 - 1))),
        (f"/{HEALTH}/Check", st.builds(health_pb2.HealthCheckRequest, service=ANY_TEXT)),
    ]


def any_request(method: str) -> st.SearchStrategy[Message]:
    """Messages of the method's request type with every field drawn at random."""
    return _message_strategy(rpc(method).request.DESCRIPTOR, depth=3)


def any_message(method: str) -> st.SearchStrategy[bytes]:
    """Serialized messages of the method's request type with every field drawn at random."""
    return any_request(method).map(lambda m: m.SerializeToString())


_SCALARS: dict[int, Callable[[], st.SearchStrategy[Any]]] = {}


def _message_strategy(descriptor: Any, depth: int) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    fields = {}
    for f in descriptor.fields:
        value = _field_strategy(f, depth)
        if value is None:
            continue
        fields[f.name] = st.lists(value, max_size=3) if f.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields).map(lambda kwargs: _build(cls, kwargs))


def _build(cls: type[Message], kwargs: dict[str, Any]) -> Message:
    message = cls()
    for name, value in kwargs.items():
        target = getattr(message, name)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Message):
                    target.add().CopyFrom(item)
                else:
                    target.append(item)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _field_strategy(f: Any, depth: int) -> st.SearchStrategy[Any] | None:
    from google.protobuf.descriptor import FieldDescriptor as F

    if f.message_type is not None:
        if f.message_type.GetOptions().map_entry or depth <= 0:
            return None  # maps and deep nesting: the hand-written strategies cover them
        return _message_strategy(f.message_type, depth - 1)
    ints = {
        F.TYPE_INT32: (-(2**31), 2**31 - 1),
        F.TYPE_SINT32: (-(2**31), 2**31 - 1),
        F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
        F.TYPE_INT64: (-(2**63), 2**63 - 1),
        F.TYPE_SINT64: (-(2**63), 2**63 - 1),
        F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
        F.TYPE_UINT32: (0, 2**32 - 1),
        F.TYPE_FIXED32: (0, 2**32 - 1),
        F.TYPE_UINT64: (0, 2**64 - 1),
        F.TYPE_FIXED64: (0, 2**64 - 1),
    }
    if f.type in ints:
        low, high = ints[f.type]
        return st.integers(low, high)
    if f.type == F.TYPE_ENUM:
        return st.integers(-5, 100)  # proto3 enums are open: unknown values travel too
    if f.type == F.TYPE_BOOL:
        return st.booleans()
    if f.type == F.TYPE_FLOAT:
        return st.floats(width=32)
    if f.type == F.TYPE_DOUBLE:
        return st.floats()
    if f.type == F.TYPE_STRING:
        return ANY_TEXT
    if f.type == F.TYPE_BYTES:
        return st.binary(max_size=256)
    return None


# The fleet the reliability tests run against.


class GoodTraffic:
    """Sends the family's well-formed requests in a loop on its own channel; every one must succeed."""

    def __init__(self, target: str, case: ServiceCase) -> None:
        self._requests = case.well_formed()
        self._channel = grpc.insecure_channel(target)
        self._stop = threading.Event()
        self.codes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"good-traffic-{case.family}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for method, request in self._requests:
                outcome = call(self._channel, method, request)
                self.codes[outcome.code.name] += 1
                if outcome.code is not OK:
                    self.failures.append(f"{method}: {outcome.code.name} {outcome.details}")
                # Leave the server (same process, same GIL) time for the requests under test.
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._channel.close()

    @property
    def sent(self) -> int:
        return sum(self.codes.values())


class Live:
    def __init__(self, server: ServerThread, case: ServiceCase) -> None:
        self.server = server
        self.case = case
        self.channel = grpc.insecure_channel(server.target)
        self.traffic = GoodTraffic(server.target, case)


class Fleet:
    """Live servers by family, started on first use, stopped (traffic first) at the end of the module."""

    def __init__(self, request: pytest.FixtureRequest, cases: dict[str, ServiceCase]) -> None:
        self._request = request
        self._cases = cases
        self._live: dict[str, Live] = {}

    def get(self, family: str) -> Live:
        if family not in self._live:
            case = self._cases[family]
            repository = self._request.getfixturevalue(case.repository_fixture)
            server = ServerThread(
                settings_for(repository, service=case.family, max_message_bytes=MESSAGE_LIMIT, http_port=0)
            ).start()
            self._live[family] = Live(server, case)
        return self._live[family]

    def started(self) -> list[Live]:
        return list(self._live.values())

    def stop(self) -> None:
        for live in self._live.values():
            live.traffic.stop()
            live.channel.close()
            live.server.stop()


# What the reliability tests sent, for the summary line pytest prints at the end (tests/reliability).
TALLY: Counter[str] = Counter()
