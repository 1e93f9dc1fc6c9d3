"""Hypothesis strategies every family shares: model names, KServe ModelInfer requests for any graph,
and messages of any RPC's request type with every field drawn at random."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import strategies as st

from harness.rpcs import HEALTH, KSERVE, MODELS, PATH_NAMES, Graph, GraphInput, ServiceCase, Tensor, get_model, rpc
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb

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
        (f"/{MODELS}/GetModel", st.builds(get_model, names, st.integers(-(2**63), 2**63 - 1))),
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
