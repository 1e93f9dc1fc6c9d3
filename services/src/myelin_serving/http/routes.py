"""The HTTP door's route table, and the one wrapper every route gets.

The core and each family add routes to an `HttpRoutes` (a family through `Family.add_routes`), as
servicers register with the gRPC server. Each endpoint is a plain `async (Request) -> Response`
that calls the same domain code its gRPC servicer calls; the wrapper, applied once per route when
the application is built (like the gRPC interceptor, not a per-request middleware stack), does
the rest around each call: count and time it (`myelin_requests_total{method="POST /v2/..."}`, the
gRPC code name as `code`); refuse it with 503 while the server drains at shutdown, as gRPC answers
UNAVAILABLE (open routes still answer); check the bearer token unless the route is open; give it the server's
default deadline (`interceptors.time_left()` reads it, as in a gRPC handler); map a MyelinError to
its HTTP status from `errors.STATUS_CODES` with a JSON body; log anything unexpected once and answer
500 without a traceback; write the access log line.

A streamed answer (`EventStream`, server-sent events) is counted when its stream ends; a MyelinError raised while
streaming (the deadline passed, the model was unloaded) ends the stream with one `data: {"error":
...}` event, as OpenAI-compatible servers do, since the status line went out with the first event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from myelin_serving.errors import (
    INTERNAL,
    STATUS_CODES,
    Cancelled,
    DeadlineExceeded,
    MyelinError,
    Status,
    Unavailable,
    status_of,
)
from myelin_serving.http.responses import (
    ErrorBody,
    EventStream,
    close_iterator,
    error_response,
    kserve_error,
    sse_event,
)
from myelin_serving.interceptors import DRAINING, check_bearer, set_deadline
from myelin_serving.metrics import MethodMetrics, Metrics
from myelin_serving.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("myelin_serving.access")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    path: str  # Starlette syntax: /v2/models/{name}/infer
    endpoint: Endpoint
    methods: tuple[str, ...]
    open: bool  # answered without a bearer token (probes, scrapes)
    counted: bool  # in the request metrics and the access log (probes and scrapes are not traffic)
    errors: ErrorBody

    @property
    def label(self) -> str:
        """The `method` label of its metrics: "POST /v2/models/{name}/infer" (bounded: one per route)."""
        return f"{'|'.join(self.methods)} {self.path}"


@dataclass(frozen=True)
class ModelCard:
    """An entry of `GET /v1/models`."""

    id: str
    created: int  # Unix time: when the version serving it was loaded
    owned_by: str = "myelin"


@dataclass
class HttpRoutes:
    """Where the core and the family add their routes."""

    routes: list[Route] = field(default_factory=list)
    # Families with OpenAI-compatible routes say which models `GET /v1/models` lists.
    model_listers: list[Callable[[], list[ModelCard]]] = field(default_factory=list)

    def add(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Sequence[str] = ("GET",),
        open: bool = False,
        counted: bool = True,
        errors: ErrorBody = kserve_error,
    ) -> None:
        self.routes.append(Route(path, endpoint, tuple(methods), open, counted, errors))

    def add_models(self, lister: Callable[[], list[ModelCard]]) -> None:
        self.model_listers.append(lister)

    def describe(self) -> str:
        return ", ".join(route.label for route in self.routes)


class RouteWrapper:
    """Wraps each route's endpoint once (see the module docstring)."""

    def __init__(self, metrics: Metrics | None, settings: Settings, draining: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._draining = draining
        self._tokens = tuple(t.encode() for t in settings.tokens())  # the gRPC port's tokens
        self._deadline = settings.default_deadline_s
        self._access_log = settings.access_log

    def wrap(self, route: Route) -> Endpoint:
        series = self._metrics.for_method(route.label) if self._metrics is not None and route.counted else None
        logged = route.counted and self._access_log
        check_token = bool(self._tokens) and not route.open
        handler, errors, deadline = route.endpoint, route.errors, self._deadline

        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            if series is not None:
                series.in_flight.inc()
            try:
                if self._draining() and not route.open:
                    raise Unavailable(DRAINING)
                if check_token:
                    check_bearer(request.headers.get("authorization"), self._tokens)
                set_deadline(started + deadline)
                async with asyncio.timeout(deadline):
                    response = await handler(request)
            except BaseException as exc:  # every outcome is counted, then answered or re-raised
                status, message = self._failure(exc, route)
                self._leave(series, logged, route, status.grpc, started, request)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return error_response(status, message, errors)
            if isinstance(response, EventStream):
                response.body_iterator = self._streamed(response.body_iterator, series, logged, route, started, request)
            else:
                self._leave(series, logged, route, grpc.StatusCode.OK, started, request)
            return response

        return endpoint

    async def _streamed(
        self,
        body: AsyncIterable[Any],
        series: MethodMetrics | None,
        logged: bool,
        route: Route,
        started: float,
        request: Request,
    ) -> AsyncIterator[Any]:
        code = grpc.StatusCode.OK
        try:
            async for chunk in body:
                yield chunk
        except MyelinError as exc:
            status = status_of(exc)
            code = status.grpc
            yield sse_event(route.errors(status, str(exc)))
        except BaseException as exc:  # the client went away (cancelled, closed), or a bug
            status, _ = self._failure(exc, route)
            code = status.grpc
            raise
        finally:
            await close_iterator(body)
            self._leave(series, logged, route, code, started, request)

    def _failure(self, exc: BaseException, route: Route) -> tuple[Status, str]:
        """The status and message that answer `exc`; logs what is not the caller's doing."""
        if isinstance(exc, MyelinError):
            return status_of(exc), str(exc)
        if isinstance(exc, TimeoutError):
            return STATUS_CODES[DeadlineExceeded], f"no answer within the server's deadline ({self._deadline} s)"
        if isinstance(exc, asyncio.CancelledError | ClientDisconnect | GeneratorExit):
            return STATUS_CODES[Cancelled], "the client went away"
        log.error("unexpected error in %s", route.label, exc_info=exc)
        return INTERNAL, "internal error; the server log has the details"

    def _leave(
        self,
        series: MethodMetrics | None,
        logged: bool,
        route: Route,
        code: grpc.StatusCode,
        started: float,
        request: Request,
    ) -> None:
        elapsed = time.monotonic() - started
        if series is not None:
            series.in_flight.dec()
            series.finished(code.name, elapsed)
        if logged:
            peer = f"{request.client.host}:{request.client.port}" if request.client else "-"
            access_log.info("%s %s %.1fms peer=%s", route.label, code.name, elapsed * 1000, peer)
