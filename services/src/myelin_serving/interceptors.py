"""What every RPC goes through: authentication, size limits, a default deadline, error mapping,
metrics, access log, and the drain at shutdown.

One interceptor wraps each method's handler once so the per-call cost is a few function calls. The
server applies it when servicers are registered (`HandlerRegistry`), not as a grpc.aio interceptor:
grpc.aio runs its interceptor pipeline as extra coroutines on every call (serving the CNN at
concurrency 32 without any interceptor was about 8% faster; that figure also held our own per-call
work, which stays). Order inside a call: count and time it; refuse it with UNAVAILABLE if the server
is draining; refuse a request over its method's size limit or that would cost far more to parse than
its size (RESOURCE_EXHAUSTED, before parsing: wire.py) or whose bytes are not the method's message
(INVALID_ARGUMENT, where grpc would answer UNKNOWN); give
a unary answer the server's default deadline when the caller set none (streams have no default:
a health Watch stays open as long as its caller wants); run the handler; map a MyelinError to its
status from `errors.STATUS_CODES`; count a caller's cancel as CANCELLED (DEADLINE_EXCEEDED when its
deadline passed), without a log line; log anything unexpected (once per cause and minute, `ErrorLog`)
and answer INTERNAL without a traceback.

Bearer tokens are the exception to "no grpc.aio interceptor": `Authenticator` is one, installed only
when tokens are configured, because only an interceptor sees the metadata before gRPC reads the
request. A call without a valid token gets a handler that refuses it without reading its message,
so an unauthenticated caller cannot make the server receive, parse or keep a large request.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from myelin_serving.errors import InvalidArgument, MyelinError, TooLarge, Unauthenticated, Unavailable, status_code
from myelin_serving.metrics import MethodMetrics, Metrics
from myelin_serving.wire import ParseLimits, check_parse_cost

log = logging.getLogger(__name__)
access_log = logging.getLogger("myelin_serving.access")

# Methods that stay open when bearer tokens are configured: probes must work without secrets. They
# say whether the server is up, nothing about its models (KServe's ModelReady stays protected).
OPEN_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
    }
)

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("myelin_deadline", default=None)


def time_left() -> float | None:
    """Seconds until the current request's deadline (the caller's, or the server default)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def set_deadline(deadline: float) -> None:
    """Start the current request's deadline (a time.monotonic() value); the HTTP door's equivalent
    of what the interceptor does for a gRPC call. Each request runs in its own task and context."""
    _deadline.set(deadline)


def bearer_accepted(header: str | None, tokens: Sequence[bytes]) -> bool:
    """Whether `header` is `Bearer <one of tokens>` (compared in constant time)."""
    if header is None:
        return False
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), t) for t in tokens)


def token_problem(header: str | None) -> str:
    """What is wrong with the credentials of a refused call: none given, or not accepted."""
    if header is None:
        return "this server requires 'authorization: Bearer <token>' (gRPC metadata, HTTP header)"
    return "the bearer token was not accepted"


def check_bearer(header: str | None, tokens: Sequence[bytes]) -> None:
    """Accept `authorization: Bearer <one of tokens>`; raise Unauthenticated (the HTTP door's check)."""
    if not bearer_accepted(header, tokens):
        raise Unauthenticated(token_problem(header))


def _authorization(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The `authorization` value of gRPC metadata, if any."""
    return next((str(value) for key, value in metadata or () if key == "authorization"), None)


class ServingInterceptor:
    """Wraps method handlers (see the module docstring); applied through `HandlerRegistry`."""

    def __init__(
        self,
        metrics: Metrics | None,
        *,
        tokens: frozenset[str] = frozenset(),
        default_deadline_s: float = 30.0,
        access_log_enabled: bool = False,
        max_request_bytes: Mapping[str, int] | None = None,
        parse_limits: ParseLimits | None = None,
    ) -> None:
        self._metrics = metrics
        self._tokens = tuple(t.encode() for t in tokens)
        self._default_deadline = default_deadline_s
        self._access_log = access_log_enabled
        self._max_request_bytes = dict(max_request_bytes or {})  # method -> bytes, where lower than the server's
        self._parse_limits = parse_limits
        self._errors = ErrorLog()
        self._draining = asyncio.Event()
        self._in_flight = 0  # calls inside a handler (refusals included, for the moment they take)
        self._last_call = 0.0  # time.monotonic() of the latest call to arrive

    def aio_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The grpc.aio interceptors the server needs: the token check, when there are tokens."""
        return [Authenticator(self)] if self._tokens else []

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` ("/package.Service/Method") with everything above around each call."""
        kwargs = {
            "request_deserializer": _tolerant(
                handler.request_deserializer, self._max_request_bytes.get(method), self._parse_limits
            ),
            "response_serializer": handler.response_serializer,
        }
        # Whether the request is a stream is known here, once, rather than looked up on every call.
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method, False), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, method, True), **kwargs)
        behavior = handler.unary_stream or handler.stream_stream
        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        stream = handler.request_streaming
        if inspect.isasyncgenfunction(behavior):
            return make(self._streaming(behavior, method, stream), **kwargs)
        # A streaming method written as a coroutine with context.write (health's Watch): no default deadline.
        return make(self._unary(behavior, method, stream, default_deadline=None), **kwargs)

    # --- draining, for a graceful stop ----------------------------------------------------------

    def draining(self) -> bool:
        """Whether new calls are refused now (the HTTP door refuses its requests then too)."""
        return self._draining.is_set()

    def drain(self) -> None:
        """From now on refuse new calls with UNAVAILABLE (probes still answer) so that callers retry
        elsewhere; calls already running go on, and streams waiting for the caller's next message end."""
        self._draining.set()

    async def drained(self, deadline: float, quiet: float = 0.2, tick: float = 0.01) -> None:
        """Until no call is running and none arrived for `quiet` seconds of a responsive event loop
        (gRPC has then handed over every call it had received: one it still held when the server
        stops would end CANCELLED), or until `deadline` (time.monotonic()). Time the loop spent
        stalled (a starved process: our `tick` sleeps coming back late) does not count as quiet,
        since gRPC could not hand calls over meanwhile either."""
        calm = 0.0
        while (now := time.monotonic()) < deadline:
            await asyncio.sleep(min(tick, max(deadline - now, 0)))
            slept = time.monotonic() - now
            idle = self._in_flight == 0 and self._last_call < now
            calm = calm + slept if idle and slept < 5 * tick else 0.0
            if calm >= quiet:
                return

    # --- the wrappers ---------------------------------------------------------------------------

    def _unary(
        self, behavior: Callable[..., Any], method: str, stream: bool, *, default_deadline: float | None = -1.0
    ) -> Callable[..., Any]:
        series = self._metrics.for_method(method) if self._metrics is not None else None
        probe = method in OPEN_METHODS
        default = self._default_deadline if default_deadline == -1.0 else default_deadline

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self._arrive(series)
            try:
                if self._draining.is_set() and not probe:
                    raise Unavailable(DRAINING)
                request = self._checked_stream(request) if stream else _checked(request)
                remaining = context.time_remaining()
                if remaining is None and default is not None:
                    _deadline.set(started + default)
                    async with asyncio.timeout(default):
                        response = await behavior(request, context)
                else:
                    _deadline.set(None if remaining is None else started + remaining)
                    response = await behavior(request, context)
            except BaseException as exc:  # every outcome is counted, then mapped or re-raised
                # Count it before aborting: the caller may see the status before this handler returns.
                self._leave(series, method, _code_of(exc, context), started, context)
                request = None  # the abort's traceback keeps this frame: it must not keep the request
                await self._fail(exc, method, context)
            self._leave(series, method, grpc.StatusCode.OK, started, context)
            return response

        return call

    def _streaming(self, behavior: Callable[..., Any], method: str, stream: bool) -> Callable[..., Any]:
        series = self._metrics.for_method(method) if self._metrics is not None else None

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = self._arrive(series)
            try:
                if self._draining.is_set():
                    raise Unavailable(DRAINING)
                request = self._checked_stream(request) if stream else _checked(request)
                remaining = context.time_remaining()
                _deadline.set(None if remaining is None else started + remaining)
                async for response in behavior(request, context):
                    yield response
            except GeneratorExit:  # gRPC closed the stream: the caller cancelled or its deadline passed
                self._leave(series, method, _code_of(asyncio.CancelledError(), context), started, context)
                raise
            except BaseException as exc:
                # Count it before aborting: the caller may see the status before this handler returns.
                self._leave(series, method, _code_of(exc, context), started, context)
                request = None  # the abort's traceback keeps this frame: it must not keep the request
                await self._fail(exc, method, context)
            else:
                self._leave(series, method, grpc.StatusCode.OK, started, context)

        return call

    def refusal(self, method: str, response_streaming: bool) -> grpc.RpcMethodHandler:
        """A handler that answers UNAUTHENTICATED without reading the request (Authenticator)."""
        series = self._metrics.for_method(method) if self._metrics is not None else None

        async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self._arrive(series)
            self._leave(series, method, grpc.StatusCode.UNAUTHENTICATED, started, context)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, self._token_problem(context))

        make = grpc.stream_stream_rpc_method_handler if response_streaming else grpc.stream_unary_rpc_method_handler
        return make(refuse)

    def authenticated(self, metadata: Sequence[tuple[str, Any]] | None) -> bool:
        return bearer_accepted(_authorization(metadata), self._tokens)

    @staticmethod
    def _token_problem(context: grpc.aio.ServicerContext) -> str:
        return token_problem(_authorization(context.invocation_metadata()))

    def _arrive(self, series: MethodMetrics | None) -> float:
        started = self._last_call = time.monotonic()
        self._in_flight += 1
        if series is not None:
            series.in_flight.inc()
        return started

    async def _checked_stream(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A client stream's requests, refusing one that did not parse; it ends when the server drains
        (a reflection stream waiting for its caller's next question would hold the stop otherwise)."""
        iterator = aiter(requests)
        draining = asyncio.ensure_future(self._draining.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(iterator))
                await asyncio.wait((following, draining), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    return
                try:
                    request = following.result()
                except StopAsyncIteration:
                    return
                yield _checked(request)
        finally:
            draining.cancel()

    async def _fail(self, exc: BaseException, method: str, context: grpc.aio.ServicerContext) -> NoReturn:
        """Abort with the status `exc` maps to (abort raises), or re-raise what gRPC must see itself."""
        if isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError) or context.cancelled():
            raise exc  # the handler chose its own status, or the caller cancelled or went away
        if not isinstance(exc, MyelinError | TimeoutError):
            self._errors.report(method, exc)
        # The traceback's frames hold the request and what was made of it (a parsed 60 MB message,
        # its arrays), and the handler's frame holds `exc`: a cycle only the garbage collector's rare
        # full passes would free. Nothing needs the traceback now.
        exc.__traceback__ = None
        if isinstance(exc, MyelinError):
            await context.abort(status_code(exc), str(exc))
        if isinstance(exc, TimeoutError):
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no deadline was set and the server default ({self._default_deadline} s) passed",
            )
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
        raise AssertionError("context.abort returned")  # it always raises

    def _leave(
        self,
        series: MethodMetrics | None,
        method: str,
        code: grpc.StatusCode,
        started: float,
        context: grpc.aio.ServicerContext,
    ) -> None:
        self._in_flight -= 1
        final = _final_code(code, context)
        elapsed = time.monotonic() - started
        if series is not None:
            series.in_flight.dec()
            series.finished(final.name, elapsed)
        if self._access_log:
            access_log.info("%s %s %.1fms peer=%s", method, final.name, elapsed * 1000, context.peer())


DRAINING = "the server is shutting down: retry, another replica will answer"
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class Authenticator(grpc.aio.ServerInterceptor):
    """The bearer-token check, before gRPC reads the request (see the module docstring)."""

    def __init__(self, interceptor: ServingInterceptor) -> None:
        self._interceptor = interceptor
        self._refusals: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method in OPEN_METHODS or self._interceptor.authenticated(details.invocation_metadata):
            return handler
        # A handler that takes a request stream, so that gRPC does not read the message for it.
        refusal = self._refusals.get(method)
        if refusal is None:
            refusal = self._refusals[method] = self._interceptor.refusal(method, handler.response_streaming)
        return refusal


class ErrorLog:
    """Unexpected exceptions, logged without flooding: the first of each cause (the method, the
    exception's type and the line that raised it, not its message, which may hold the caller's
    values) with its traceback; then at most one line a minute per cause, with the count."""

    WINDOW_S = 60.0
    MAX_CAUSES = 256

    def __init__(self) -> None:
        self._causes: dict[tuple[str, str, str], list[float]] = {}  # cause -> [window start, unlogged count]

    def report(self, method: str, exc: BaseException) -> None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
        cause = (method, type(exc).__qualname__, where)
        now = time.monotonic()
        seen = self._causes.get(cause)
        if seen is None:
            if len(self._causes) >= self.MAX_CAUSES:
                del self._causes[next(iter(self._causes))]
            self._causes[cause] = [now, 0]
            log.error("unexpected error in %s (answered INTERNAL; this cause is logged once a minute)", method,
                      exc_info=exc)  # fmt: skip
        elif now - seen[0] >= self.WINDOW_S:
            log.error("unexpected error in %s, %d time(s) since %.0f s ago: %s: %s", method, seen[1] + 1,
                      now - seen[0], type(exc).__name__, str(exc)[:200])  # fmt: skip
            seen[:] = [now, 0]
        else:
            seen[1] += 1


@dataclass(frozen=True)
class _Refused:
    """Stands in for a request that was not parsed (over its method's limit, or not its message), so
    that the call answers with the error instead of gRPC's UNKNOWN."""

    error: MyelinError


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, limit: int | None, parse_limits: ParseLimits | None
) -> Callable[[bytes], Any] | None:
    """`deserializer`, refusing more than `limit` bytes, and a message that would cost more than
    `parse_limits` to parse, before parsing; returning _Refused instead of raising (grpc would
    answer UNKNOWN)."""
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)  # generated code passes Message.FromString
    descriptor = getattr(message_type, "DESCRIPTOR", None) if parse_limits is not None else None

    def deserialize(data: bytes) -> Any:
        if limit is not None and len(data) > limit:
            return _Refused(TooLarge(f"the request is {len(data):,} bytes; this method takes at most {limit:,}"))
        try:
            if descriptor is not None and parse_limits is not None:
                check_parse_cost(data, descriptor, parse_limits)
            return deserializer(data)
        except MyelinError as exc:
            return _Refused(exc.with_traceback(None))  # its frame holds `data`
        except Exception as exc:  # protobuf's DecodeError, MalformedMessage, or a custom deserializer's error
            return _Refused(
                InvalidArgument(
                    f"the request bytes are not a valid message for this method ({str(exc) or type(exc).__name__}): "
                    "check that the client uses this service's .proto"
                )
            )

    return deserialize


def _checked(request: Any) -> Any:
    """The request, or the error that stood in for it."""
    if isinstance(request, _Refused):
        raise request.error
    return request


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(exc, MyelinError):
        return status_code(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, asyncio.CancelledError):
        # gRPC cancels a call both when its caller cancels and when its deadline passes.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    if isinstance(exc, grpc.aio.AbortError):
        return _final_code(grpc.StatusCode.UNKNOWN, context, aborted=True)
    return grpc.StatusCode.INTERNAL


def _final_code(code: grpc.StatusCode, context: grpc.aio.ServicerContext, *, aborted: bool = False) -> grpc.StatusCode:
    """The status the handler set on the context (context.set_code / abort), else `code`."""
    if code is not grpc.StatusCode.OK and not aborted:
        return code
    set_code = context.code()
    if isinstance(set_code, grpc.StatusCode):
        return set_code
    if isinstance(set_code, int):  # grpc.aio reports the raw integer
        return next((c for c in grpc.StatusCode if c.value[0] == set_code), code)
    return code


class HandlerRegistry:
    """Where servicers are registered (`add_*Servicer_to_server(servicer, registry)`): each method
    handler reaches the server already wrapped by the interceptor, so no per-call pipeline runs."""

    def __init__(self, server: grpc.aio.Server, interceptor: ServingInterceptor) -> None:
        self.server = server
        self._interceptor = interceptor
        # Each method's own handler, unwrapped, by "/package.Service/Method": the HTTP door's gRPC-JSON
        # transcoding (http/rpc.py) calls these in-process, around its own auth, deadline and metrics.
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers([_WrappedGenericHandler(h, self._interceptor) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        # Generated code registers each service both ways; grpc prefers these registered handlers.
        self.methods.update({f"/{service}/{name}": h for name, h in handlers.items()})
        wrapped = {name: self._interceptor.wrap(h, f"/{service}/{name}") for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, wrapped)


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come back wrapped (each wrapped once, then cached)."""

    def __init__(self, inner: grpc.GenericRpcHandler, interceptor: ServingInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(details)
        if handler is None:
            return None
        method = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._interceptor.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
