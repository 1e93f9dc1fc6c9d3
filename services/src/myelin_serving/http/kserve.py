"""The Open Inference Protocol over REST (the KServe v2 HTTP/REST spec), through `InferenceProtocol`.

The same naming, checks, batchers and limits as `inference.GRPCInferenceService` (kserve.py): this
module only turns JSON (and the binary tensor data extension) into `RequestTensor`s and the results
back. Paths:

    GET  /v2/health/live, /v2/health/ready      200, or 400 when not (the spec: a 4xx means false)
    GET  /v2                                    server metadata
    GET  /v2/models/{name}[/versions/{v}]       model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready 200, or 400 while loading or failed; 404 if unknown
    POST /v2/models/{name}[/versions/{v}]/infer inference

Tensors come as JSON `data` (flat or nested, row-major) or, with the binary tensor data extension,
as raw bytes after a JSON header of `Inference-Header-Content-Length` bytes, each input saying its
`parameters.binary_data_size`; BYTES elements are then 4-byte little-endian lengths each followed
by the bytes, as over gRPC. An output goes back as binary data when the request's
`parameters.binary_data_output` or the output's own `parameters.binary_data` says so (tritonclient
asks for it by default), otherwise as JSON `data` (flat; NaN and infinities become null, which JSON
lacks: ask for binary data to keep them). Every size is checked against the body before use: the
header length against the body, each input's binary_data_size against what is left, and the
remainder must be exactly used up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from myelin_serving import __version__
from myelin_serving.errors import InvalidArgument, TooLarge
from myelin_serving.http.body import BINARY, check_content_type, parse_object, read_body, type_name
from myelin_serving.http.responses import json_response
from myelin_serving.http.routes import HttpRoutes
from myelin_serving.interceptors import time_left
from myelin_serving.kserve import PLATFORM, SERVER_NAME, UNSUPPORTED_OUTPUT_PARAMETERS, InferenceProtocol, InferResult
from myelin_serving.tensors import DTYPES, RequestTensor, datatype_of, encode_raw, join_bytes

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
_KINDS = {"BOOL": "b", "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}  # JSON value kinds each datatype takes
_INTEGER_KINDS = "iu"
MAX_RANK = 64  # numpy's limit


def add_routes(routes: HttpRoutes, protocol: InferenceProtocol, *, serving: Callable[[], bool], limit: int) -> None:
    rest = KServeRest(protocol, serving, limit)
    routes.add("/v2/health/live", rest.live, open=True, counted=False)
    routes.add("/v2/health/ready", rest.ready, open=True, counted=False)
    routes.add("/v2", rest.server_metadata)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes.add(prefix, rest.model_metadata)
        routes.add(f"{prefix}/ready", rest.model_ready)
        routes.add(f"{prefix}/infer", rest.infer, methods=("POST",))


@dataclass(frozen=True)
class RestInferRequest:
    id: str | None
    inputs: list[RequestTensor]
    outputs: list[str]  # the requested outputs; empty: all, in the graph's order
    binary: Callable[[str], bool]  # whether an output goes back as binary data


class KServeRest:
    """Request in, an InferenceProtocol call, JSON (and binary data) out."""

    def __init__(self, protocol: InferenceProtocol, serving: Callable[[], bool], limit: int) -> None:
        self._protocol = protocol
        self._serving = serving
        self._limit = limit

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self._serving() else 400)

    async def server_metadata(self, request: Request) -> Response:
        return json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        name, version = _target(request)
        endpoint = self._protocol.resolve(name, version)
        graph = endpoint.graph
        return json_response(
            {
                "name": name,
                "versions": self._protocol.versions(name),
                "platform": PLATFORM,
                "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in graph.inputs],
                "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in graph.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        name, version = _target(request)
        return Response(status_code=200 if self._protocol.model_ready(name, version) else 400)

    async def infer(self, request: Request) -> Response:
        name, version = _target(request)
        check_content_type(request, BINARY)
        body = await read_body(request, self._limit)
        endpoint = self._protocol.resolve(name, version)
        header, binary = _split(body, request.headers.get(HEADER_LENGTH), self._protocol.max_elements(endpoint))
        parsed = parse_infer_request(header, binary)
        result = await self._protocol.infer(endpoint, parsed.inputs, parsed.outputs, timeout=time_left())
        return infer_response(name, result, parsed)


def _target(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params["name"], params.get("version", "")


# Commas a JSON header may hold beyond one per number: the keys, shapes and parameters around the data.
STRUCTURE_COMMAS = 4096


def _split(body: bytes, header_length: str | None, max_elements: int) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary data after it (none without Inference-Header-Content-Length).

    A parsed JSON number costs about 20 times its text, so the header's values are counted (a comma
    each) against the graph's element budget before it is parsed: a body within the byte limit
    cannot become gigabytes of Python objects.
    """
    view = memoryview(body)
    length = len(body)
    if header_length is not None:
        if not header_length.isdigit() or not header_length.isascii():
            raise InvalidArgument(f"Inference-Header-Content-Length must be a byte count, not {header_length[:40]!r}")
        length = int(header_length)
        if length > len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length says the JSON header is {length} bytes; the whole body is {len(body)}"
            )
    if body.count(b",", 0, length) > max_elements + STRUCTURE_COMMAS:
        raise TooLarge(
            f"the JSON holds more than {max_elements:,} values; this graph takes at most {max_elements:,} numbers "
            "(max_request_elements): split the request, or send the tensors as binary data"
        )
    what = (
        "the inference request"
        if header_length is None
        else "the inference header (Inference-Header-Content-Length bytes)"
    )
    return parse_object(view[:length], what), view[length:]


def parse_infer_request(header: dict[str, Any], binary: memoryview) -> RestInferRequest:
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument(f"id must be a string, not {type_name(request_id)}")
    parameters = _object(header.get("parameters"), "parameters")
    binary_all = _flag(parameters, "binary_data_output", "parameters")
    outputs, binary_named = _requested_outputs(header.get("outputs"))
    return RestInferRequest(
        id=request_id,
        inputs=_inputs(header.get("inputs"), binary),
        outputs=outputs,
        binary=lambda name: binary_named.get(name, binary_all),
    )


def _inputs(inputs: object, binary: memoryview) -> list[RequestTensor]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("inputs must be a non-empty array of tensors: send every input the graph takes")
    tensors, offset = [], 0
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where} must be an object with name, datatype, shape and data")
        name, datatype = _string(item, "name", where), _string(item, "datatype", where)
        where = f"{where} {name[:80]!r}"
        shape = _shape(item.get("shape"), where)
        parameters = _object(item.get("parameters"), f"{where} parameters")
        if "shared_memory_region" in parameters:
            raise InvalidArgument(f"{where}: shared memory is not supported; send data or binary_data_size")
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise InvalidArgument(f"{where} has both data and parameters.binary_data_size: send one or the other")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"{where}: binary_data_size must be a byte count, not {size!r:.40}")
            if size > len(binary) - offset:
                hint = "" if len(binary) else " (no Inference-Header-Content-Length: the whole body was read as JSON)"
                raise InvalidArgument(
                    f"{where}: binary_data_size {size} goes past the end of the binary data "
                    f"({len(binary) - offset} bytes left){hint}"
                )
            tensors.append(RequestTensor(name, datatype, shape, raw=bytes(binary[offset : offset + size])))
            offset += size
        elif "data" in item:
            tensors.append(RequestTensor(name, datatype, shape, raw=json_tensor(item["data"], datatype, shape, where)))
        else:
            raise InvalidArgument(
                f"{where} has no data: set data, or parameters.binary_data_size with binary tensor data"
            )
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes of binary data are left over after the inputs' binary_data_size "
            f"({offset} bytes): Inference-Header-Content-Length or a binary_data_size is wrong"
        )
    return tensors


def json_tensor(data: object, datatype: str, shape: tuple[int, ...], where: str) -> bytes:
    """JSON `data` (flat or nested) as the raw little-endian bytes `tensors.decode` takes.

    An unknown datatype gives no bytes: decode() then refuses it against the graph's own datatype."""
    if datatype not in DTYPES:
        return b""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _strings(data, where)
        _check_count(len(items), count, shape, where)
        return join_bytes(items)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting, absurd depth
        raise InvalidArgument(f"{where}: data is not a regular array of numbers ({exc})"[:300]) from None
    _check_count(array.size, count, shape, where)
    kinds = _KINDS.get(datatype, _INTEGER_KINDS)
    if array.size and array.dtype.kind not in kinds:
        wanted = {"b": "booleans", "iuf": "numbers", _INTEGER_KINDS: "integers"}[kinds]
        raise InvalidArgument(f"{where}: {datatype} data must be {wanted}")
    dtype = DTYPES[datatype]
    if kinds == _INTEGER_KINDS and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidArgument(f"{where}: {datatype} values must lie in [{info.min}, {info.max}]")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _check_count(size: int, count: int, shape: tuple[int, ...], where: str) -> None:
    if size != count:
        raise InvalidArgument(f"{where}: shape {list(shape)} needs {count} elements, data has {size}")


def _strings(data: object, where: str) -> list[bytes]:
    """BYTES data: strings, nested in arrays or not, flattened in row-major order, as UTF-8."""
    items: list[bytes] = []
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, str):
            try:
                items.append(value.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
                raise InvalidArgument(f"{where}: BYTES strings must be valid Unicode text") from None
        else:
            raise InvalidArgument(f"{where}: BYTES data must be strings, not {type_name(value)}")
    return items


def _requested_outputs(outputs: object) -> tuple[list[str], dict[str, bool]]:
    if outputs is None:
        return [], {}
    if not isinstance(outputs, list):
        raise InvalidArgument(f"outputs must be an array of {{name, parameters}} objects, not {type_name(outputs)}")
    names, binary = [], {}
    for index, item in enumerate(outputs):
        if not isinstance(item, dict):
            raise InvalidArgument(f"outputs[{index}] must be an object with a name")
        name = _string(item, "name", f"outputs[{index}]")
        parameters = _object(item.get("parameters"), f"outputs[{index}] parameters")
        for parameter in UNSUPPORTED_OUTPUT_PARAMETERS:
            if parameter in parameters:
                raise InvalidArgument(f"output parameter {parameter!r} is not supported; ask for the plain tensor")
        if "binary_data" in parameters:
            binary[name] = _flag(parameters, "binary_data", f"outputs[{index}] parameters")
        names.append(name)
    return names, binary


def infer_response(name: str, result: InferResult, request: RestInferRequest) -> Response:
    outputs, blobs = [], []
    for output, array in result.outputs.items():
        entry: dict[str, Any] = {"name": output, "datatype": datatype_of(array), "shape": list(array.shape)}
        if request.binary(output):
            raw = encode_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_values(array, output)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": str(result.endpoint.model.version)}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    if not blobs:
        return json_response(body)
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return Response(header + b"".join(blobs), headers=headers, media_type=BINARY)


def _json_values(array: np.ndarray, output: str) -> Any:
    if array.dtype.kind not in "OUS":
        return np.ascontiguousarray(array).reshape(-1)  # orjson writes numpy arrays itself
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidArgument(f"output {output!r} holds bytes that are not UTF-8: ask for it as binary data") from None


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key} must be a string, not {type_name(value)}")
    return value


def _shape(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidArgument(f"{where}: shape must be an array of integers")
    if len(value) > MAX_RANK:
        raise InvalidArgument(f"{where}: shape has {len(value)} dimensions; numpy takes at most {MAX_RANK}")
    if any(d < 0 for d in value):
        raise InvalidArgument(f"{where} has a negative dimension in shape {value[:8]}")
    return tuple(value)


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object, not {type_name(value)}")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where}.{key} must be true or false")
    return value
