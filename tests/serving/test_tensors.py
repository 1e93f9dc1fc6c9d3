"""KServe v2 tensors <-> numpy, without gRPC: raw and typed contents, BYTES prefixes, every check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_serving.errors import InvalidArgument
from myelin_serving.runtime import TensorInfo
from myelin_serving.tensors import (
    RequestTensor,
    datatype_of,
    decode,
    encode_raw,
    fill_contents,
    join_bytes,
)

IMAGE = TensorInfo("image", "FP32", (-1, 28, 28))
TEXT = TensorInfo("text", "BYTES", (-1,))


def raw(name: str, datatype: str, shape: tuple[int, ...], data: bytes) -> RequestTensor:
    return RequestTensor(name, datatype, shape, raw=data)


def typed(name: str, datatype: str, shape: tuple[int, ...], **contents: object) -> RequestTensor:
    return RequestTensor(name, datatype, shape, contents=pb.InferTensorContents(**contents))


def test_raw_fp32_is_little_endian_and_keeps_its_shape() -> None:
    pixels = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
    array = decode(raw("image", "FP32", (2, 28, 28), pixels.astype("<f4").tobytes()), IMAGE, 0)
    np.testing.assert_array_equal(array, pixels)
    assert array.shape == (2, 28, 28)


def test_typed_contents_decode_to_the_same_array() -> None:
    pixels = np.random.default_rng(1).random((1, 28, 28), dtype=np.float32)
    array = decode(typed("image", "FP32", (1, 28, 28), fp32_contents=pixels.ravel()), IMAGE, 0)
    np.testing.assert_array_equal(array, pixels)


@given(st.lists(st.text(max_size=20), min_size=1, max_size=8))
def test_bytes_round_trip_through_length_prefixes(texts: list[str]) -> None:
    items = [t.encode("utf-8") for t in texts]
    encoded = join_bytes(items)
    array = decode(raw("text", "BYTES", (len(items),), encoded), TEXT, 0)
    assert list(array) == texts
    assert encode_raw(array) == encoded


def test_bytes_become_strings_for_the_graph_and_go_back_as_bytes() -> None:
    array = decode(typed("text", "BYTES", (2,), bytes_contents=[b"bonjour", "été".encode()]), TEXT, 0)
    assert list(array) == ["bonjour", "été"]
    contents = pb.InferTensorContents()
    fill_contents(contents, array)
    assert list(contents.bytes_contents) == [b"bonjour", "été".encode()]


@pytest.mark.parametrize(
    ("datatype", "values", "field"),
    [
        ("INT64", [-3, 2**40], "int64_contents"),
        ("INT32", [-7, 9], "int_contents"),
        ("UINT8", [0, 255], "uint_contents"),
        ("BOOL", [True, False], "bool_contents"),
        ("FP64", [0.5, -1.25], "fp64_contents"),
    ],
)
def test_every_typed_field_round_trips(datatype: str, values: list[object], field: str) -> None:
    spec = TensorInfo("x", datatype, (-1,))
    array = decode(typed("x", datatype, (len(values),), **{field: values}), spec, 0)
    assert datatype_of(array) == datatype
    assert array.tolist() == values
    contents = pb.InferTensorContents()
    fill_contents(contents, array)
    assert list(getattr(contents, field)) == values
    assert decode(raw("x", datatype, (len(values),), encode_raw(array)), spec, 0).tolist() == values


BAD = [
    ("wrong datatype", raw("image", "FP64", (1, 28, 28), bytes(8 * 784)), IMAGE, "the graph takes FP32"),
    ("wrong rank", raw("image", "FP32", (784,), bytes(4 * 784)), IMAGE, "takes rank 3"),
    ("wrong fixed axis", raw("image", "FP32", (1, 28, 27), bytes(4 * 756)), IMAGE, "axis 2 must be 28"),
    ("negative axis", raw("image", "FP32", (-1, 28, 28), b""), IMAGE, "negative dimension"),
    ("short raw", raw("image", "FP32", (1, 28, 28), bytes(100)), IMAGE, "need 3136 raw bytes, got 100"),
    (
        "typed count",
        typed("image", "FP32", (1, 28, 28), fp32_contents=[0.0] * 5),
        IMAGE,
        "shape needs 784 elements, contents.fp32_contents has 5",
    ),
    (
        "typed wrong field",
        typed("image", "FP32", (1, 28, 28), int_contents=[0] * 784),
        IMAGE,
        "FP32 data goes in contents.fp32_contents",
    ),
    (
        "narrow int out of range",
        typed("x", "UINT8", (1,), uint_contents=[300]),
        TensorInfo("x", "UINT8", (-1,)),
        r"must lie in \[0, 255\]",
    ),
    ("fp16 typed", typed("h", "FP16", (1,)), TensorInfo("h", "FP16", (-1,)), "send it in raw_input_contents"),
    ("bytes truncated prefix", raw("text", "BYTES", (1,), b"\x05\x00"), TEXT, "needs a 4-byte length"),
    ("bytes short element", raw("text", "BYTES", (1,), b"\x05\x00\x00\x00abc"), TEXT, "declares 5 bytes"),
    ("bytes left over", raw("text", "BYTES", (1,), b"\x01\x00\x00\x00ab"), TEXT, "1 bytes left over"),
    ("bytes not utf-8", raw("text", "BYTES", (1,), b"\x01\x00\x00\x00\xff"), TEXT, "UTF-8"),
    ("raw bool not 0/1", raw("b", "BOOL", (1,), b"\x07"), TensorInfo("b", "BOOL", (-1,)), "0 or 1"),
]


@pytest.mark.parametrize(("case", "tensor", "spec", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_tensors_are_refused_with_an_actionable_message(
    case: str, tensor: RequestTensor, spec: TensorInfo, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        decode(tensor, spec, 3)
    assert f"inputs[3] {tensor.name!r}" in str(info.value)
