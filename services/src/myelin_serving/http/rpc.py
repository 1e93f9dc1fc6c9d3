"""gRPC-JSON transcoding: `POST /rpc/<full.Service>/<Method>` calls a gRPC method with a JSON body.

Every method the server registers with a single request message is reachable this way, whatever the
family: the body is the request message in protobuf's JSON mapping (`google.protobuf.json_format`:
field names in lowerCamelCase or as in the .proto, bytes as base64, int64 as strings, enums by
name; an empty body is the empty message), and the answer is the response message in the same
mapping, every field present. A server-streaming method answers with server-sent events, one
`data: <message as JSON>` per message; the stream ends when the method's does, and an error met
after the first message ends it with one `data: {"error": ...}` event.

The call goes to the method's own servicer in-process, not through a loopback gRPC channel: the
HTTP route wrapper (http/routes.py) already gives it what the gRPC interceptor gives a gRPC call
(the bearer token, open only for the methods gRPC leaves open; the server's default deadline;
the one error table's statuses; request metrics; the access log), the body is bounded before it is
parsed (`max_message_bytes`, as gRPC bounds its messages), and a loopback channel would add a
second serialization and, under mutual TLS, need a client certificate the server does not have.
The servicer gets a `CallContext`: the part of `grpc.aio.ServicerContext` that Myelin's servicers
use. When the call ends (answered, failed, or the client gone), its done callbacks run, as gRPC's
do, so a generation whose client hangs up leaves the batch at once.

Not transcoded: client- and bidirectional-streaming methods (reflection, KServe's stream infer),
and streaming methods written as coroutines that call `context.write` (health's Watch).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response

from myelin_serving.errors import STATUS_CODES, InvalidArgument, MyelinError, NotFound
from myelin_serving.http.body import check_content_type, parse_object, read_body
from myelin_serving.http.responses import EventStream, json_response, sse_event, unless_disconnected
from myelin_serving.http.routes import HttpRoutes
from myelin_serving.interceptors import time_left

PREFIX = "/rpc"


@dataclass(frozen=True)
class Method:
    name: str  # "/package.Service/Method"
    request_class: type[Message]
    behavior: Callable[..., Any]  # the servicer's method: (request, context) -> response | async iterator
    streaming: bool


def add_routes(routes: HttpRoutes, handlers: Mapping[str, grpc.RpcMethodHandler], *, limit: int) -> None:
    """`POST /rpc/{service}/{method}`: one route for every method in `handlers` that takes one request
    message (one route, so one series in the request metrics and one row in the route table)."""
    methods = {name: m for name, handler in handlers.items() if (m := _transcodable(name, handler)) is not None}
    known = ", ".join(sorted(name.strip("/") for name in methods))

    async def endpoint(request: Request) -> Response:
        name = f"/{request.path_params['service']}/{request.path_params['method']}"
        method = methods.get(name)
        if method is None:
            raise NotFound(f"no method {name[:160]!r} to call as JSON here; there are: {known}")
        return await _call(method, request, limit)

    routes.add(PREFIX + "/{service}/{method}", endpoint, methods=("POST",))


def _transcodable(name: str, handler: grpc.RpcMethodHandler) -> Method | None:
    if handler.request_streaming:
        return None
    if handler.unary_stream is not None:
        if not inspect.isasyncgenfunction(handler.unary_stream):
            return None  # writes with context.write (health's Watch)
        behavior, streaming = handler.unary_stream, True
    else:
        behavior, streaming = handler.unary_unary, False
    service, _, method = name.strip("/").partition("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    return Method(name, message_factory.GetMessageClass(descriptor.input_type), behavior, streaming)


async def _call(method: Method, request: Request, limit: int) -> Response:
    check_content_type(request)
    message = parse_message(await read_body(request, limit), method.request_class)
    context = CallContext(request)
    if method.streaming:
        return await _stream(method, message, context)
    try:
        reply = await unless_disconnected(request, method.behavior(message, context))
    finally:
        context.finish()
    return json_response(to_json(reply))


async def _stream(method: Method, message: Message, context: CallContext) -> Response:
    replies: AsyncGenerator[Message, None] = method.behavior(message, context)
    # The first message is awaited here, so an error before it (an unknown model, a bad field) is an
    # HTTP status rather than a 200 carrying an error event.
    try:
        first = await anext(replies, None)
    except BaseException:
        await replies.aclose()
        context.finish()
        raise

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is None:
                return
            yield sse_event(to_json(first))
            async for reply in replies:
                yield sse_event(to_json(reply))
        finally:
            await replies.aclose()
            context.finish()

    return EventStream(events())


def parse_message(body: bytes, cls: type[Message]) -> Message:
    """`body` (a JSON object; empty: the empty message) as a `cls`, or InvalidArgument saying what is wrong."""
    message = cls()
    try:
        json_format.ParseDict(parse_object(body) if body else {}, message)
    except json_format.ParseError as exc:
        raise InvalidArgument(
            f"the body is not a {cls.DESCRIPTOR.full_name} in protobuf's JSON mapping: {str(exc)[:300]}"
        ) from None
    return message


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


class CallContext:
    """What a servicer sees of its call when it comes over HTTP: the part of
    `grpc.aio.ServicerContext` that Myelin's servicers use."""

    def __init__(self, request: Request) -> None:
        self._client = request.client
        self._callbacks: list[Callable[[Any], None]] = []
        self._code: grpc.StatusCode | None = None
        self._done = False

    def time_remaining(self) -> float | None:
        return time_left()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return f"ipv4:{self._client.host}:{self._client.port}" if self._client else "unknown"

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        pass

    def done(self) -> bool:
        return self._done

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        """The error of the table with `code` (its first), so the HTTP answer has that code's status."""
        error = next((cls for cls, status in STATUS_CODES.items() if status.grpc == code), MyelinError)
        raise error(details or code.name)

    def finish(self) -> None:
        """The call is over: run the done callbacks, once."""
        if self._done:
            return
        self._done = True
        for callback in self._callbacks:
            callback(self)
