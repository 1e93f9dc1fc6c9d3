"""Tensors of the Open Inference Protocol (KServe v2) <-> numpy arrays, checked against a graph. No gRPC.

A request tensor arrives either as raw little-endian bytes (`raw_input_contents`; BYTES elements
each preceded by a 4-byte little-endian length) or as typed contents (`InferTensorContents`, one
repeated field per datatype family). Every check here fails with InvalidArgument and a message
naming the tensor and what to change: name, datatype against the graph, shape against the graph,
byte length, element count, value range of narrow integers, BYTES prefixes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from myelin_serving.errors import InvalidArgument
from myelin_serving.runtime import TensorInfo

# KServe datatype -> numpy dtype (little-endian) of a decoded tensor.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
# KServe datatype -> the InferTensorContents field that carries it (FP16 has none: raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
ALL_CONTENTS_FIELDS = tuple(sorted(set(CONTENTS_FIELDS.values())))
_NARROW_INTS = ("UINT8", "UINT16", "INT8", "INT16")  # carried in 32-bit fields: range-checked
LENGTH_PREFIX = 4


@dataclass(frozen=True)
class RequestTensor:
    """One input as it came over the wire: exactly one of `raw` and `contents` is set."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    contents: Any = None  # an InferTensorContents message (or anything with its repeated fields)


_DATATYPE_OF: dict[np.dtype, str] = {}


def datatype_of(array: np.ndarray) -> str:
    """The KServe datatype of an output array."""
    kind = array.dtype
    known = _DATATYPE_OF.get(kind)
    if known is not None:
        return known
    if kind.kind in "OUS":
        name = "BYTES"
    else:
        little = kind.newbyteorder("<")
        name = next((n for n, d in DTYPES.items() if n != "BYTES" and d == little), "")
        if not name:
            raise TypeError(f"no KServe datatype for numpy dtype {kind}")
    _DATATYPE_OF[kind] = name
    return name


def decode(tensor: RequestTensor, spec: TensorInfo, index: int) -> np.ndarray:
    """The tensor as a numpy array the graph accepts, after every check against `spec`."""
    where = f"inputs[{index}] {tensor.name!r}"
    check_header(tensor, spec, index)
    count = math.prod(tensor.shape)
    if tensor.raw is not None:
        array = _from_raw(tensor.datatype, tensor.raw, count, where)
    else:
        array = _from_contents(tensor.datatype, tensor.contents, count, where)
    array = array.reshape(tensor.shape)
    if tensor.datatype == "BYTES":
        return _as_strings(array, where)
    return array


def check_header(tensor: RequestTensor, spec: TensorInfo, index: int) -> None:
    """Datatype and shape against `spec`, and the payload's size against the shape: what can be
    checked before anything is decoded (nothing here allocates for the tensor's elements)."""
    where = f"inputs[{index}] {tensor.name!r}"
    if tensor.datatype != spec.datatype:
        raise InvalidArgument(f"{where} has datatype {tensor.datatype or '(unset)'}; the graph takes {spec.datatype}")
    check_shape(tensor.shape, spec, where)
    count = math.prod(tensor.shape)
    if tensor.raw is not None:
        if tensor.datatype == "BYTES":
            if len(tensor.raw) < count * LENGTH_PREFIX:
                raise InvalidArgument(
                    f"{where}: {count} raw BYTES elements cannot fit in {len(tensor.raw)} bytes "
                    "(each needs a 4-byte length)"
                )
            return
        itemsize = DTYPES[tensor.datatype].itemsize
        if len(tensor.raw) != count * itemsize:
            raise InvalidArgument(
                f"{where}: {count} {tensor.datatype} elements need {count * itemsize} raw bytes, got {len(tensor.raw)}"
            )
        return
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(f"{where}: {tensor.datatype} has no typed contents field; send it in raw_input_contents")
    others = [f for f in ALL_CONTENTS_FIELDS if f != field and len(getattr(tensor.contents, f))]
    if others:
        raise InvalidArgument(f"{where}: {tensor.datatype} data goes in contents.{field}, not in contents.{others[0]}")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgument(f"{where}: shape needs {count} elements, contents.{field} has {len(values)}")


def check_shape(shape: Sequence[int], spec: TensorInfo, where: str) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidArgument(
            f"{where} has shape {list(shape)}; the graph takes rank {len(spec.shape)}: {_shape_text(spec)}"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if got < 0:
            raise InvalidArgument(f"{where} has a negative dimension in shape {list(shape)}")
        if want >= 0 and got != want:
            raise InvalidArgument(
                f"{where} has shape {list(shape)}; axis {axis} must be {want} (the graph takes {_shape_text(spec)})"
            )


def _shape_text(spec: TensorInfo) -> str:
    return "(" + ", ".join("-1" if d < 0 else str(d) for d in spec.shape) + ")"


def _from_raw(datatype: str, raw: bytes, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        return _split_bytes(raw, count, where)
    array = np.frombuffer(raw, dtype=DTYPES[datatype])  # its length was checked (check_header)
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise InvalidArgument(f"{where}: raw BOOL bytes must be 0 or 1")
    return array


def _split_bytes(raw: bytes, count: int, where: str) -> np.ndarray:
    """BYTES elements, each preceded by its length as a 4-byte little-endian unsigned integer."""
    items = np.empty(count, dtype=object)
    offset, size = 0, len(raw)
    for i in range(count):
        if offset + LENGTH_PREFIX > size:
            raise InvalidArgument(f"{where}: raw BYTES ends after {i} of {count} elements (each needs a 4-byte length)")
        length = int.from_bytes(raw[offset : offset + LENGTH_PREFIX], "little")
        offset += LENGTH_PREFIX
        if offset + length > size:
            raise InvalidArgument(
                f"{where}: raw BYTES element {i} declares {length} bytes but only {size - offset} remain"
            )
        items[i] = raw[offset : offset + length]
        offset += length
    if offset != size:
        raise InvalidArgument(f"{where}: {size - offset} bytes left over after {count} raw BYTES elements")
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(LENGTH_PREFIX, "little") + item for item in items)


def _from_contents(datatype: str, contents: Any, count: int, where: str) -> np.ndarray:
    values = getattr(contents, CONTENTS_FIELDS[datatype])  # its field and count were checked (check_header)
    if datatype == "BYTES":
        items = np.empty(count, dtype=object)
        items[:] = list(values)
        return items
    dtype = DTYPES[datatype]
    if datatype in _NARROW_INTS:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if count and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidArgument(f"{where}: {datatype} values must lie in [{info.min}, {info.max}]")
        return wide.astype(dtype)
    return np.asarray(values, dtype=dtype)


def _as_strings(items: np.ndarray, where: str) -> np.ndarray:
    # onnxruntime's string tensors take str; KServe BYTES are bytes: UTF-8 is the only sound bridge.
    try:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(items) if items.size else items
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{where}: BYTES elements must be UTF-8 text for this graph") from exc


def encode_raw(array: np.ndarray) -> bytes:
    """An output array as raw little-endian bytes (BYTES: length-prefixed UTF-8)."""
    if datatype_of(array) == "BYTES":
        return join_bytes([_to_bytes(item) for item in array.reshape(-1)])
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def fill_contents(contents: Any, array: np.ndarray) -> None:
    """Put an output array into the typed field of an InferTensorContents message."""
    datatype = datatype_of(array)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:  # FP16: no typed field; widen to FP32 would change the declared datatype
        raise InvalidArgument(f"outputs of datatype {datatype} can only be returned raw: send the inputs raw")
    flat = array.reshape(-1)
    values = [_to_bytes(item) for item in flat] if datatype == "BYTES" else flat.tolist()
    getattr(contents, field).extend(values)


def _to_bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode("utf-8")
