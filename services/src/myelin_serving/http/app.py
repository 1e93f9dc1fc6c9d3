"""The ASGI application of one service: the core's routes, the family's, and `/metrics`.

Core routes: the Open Inference Protocol over REST (http/kserve.py), every gRPC method as JSON
under `/rpc/` (http/rpc.py), `/metrics` (Prometheus text,
open like the health routes: scrapers carry no token, and the metrics carry no request content),
and `/v1/models` when the family has OpenAI-compatible routes. An unknown path answers 404 and a
known path with the wrong method 405, each with a JSON body naming the routes that exist (in
OpenAI's error shape under /v1/, as OpenAI clients expect).

A request whose path and method match one of these routes goes straight to its wrapped endpoint
(`DirectRoutes`); Starlette's router and middleware answer only the rest (an unknown path, a wrong
method, HEAD, a trailing slash, `/metrics`). The wrapper already turns every exception into an
answer, so Starlette's error middleware, exception middleware, route scan and per-request
exception wrapper add nothing on these routes but their cost: the event loop's CPU per KServe REST
infer call on mnist-cnn fell from 279 to 248 us (three paired runs at concurrency 8, the main
thread's CPU time from /proc).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import grpc
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from myelin_serving.errors import STATUS_CODES, NotFound, Status
from myelin_serving.family import Family, ServingContext
from myelin_serving.http import kserve, rpc
from myelin_serving.http.openai import add_model_routes, openai_error
from myelin_serving.http.responses import error_response, kserve_error
from myelin_serving.http.routes import Endpoint, HttpRoutes, RouteWrapper
from myelin_serving.kserve import InferenceProtocol

# What gRPC answers to a method it does not have; HTTP says 405 for a known path.
METHOD_NOT_ALLOWED = Status(grpc.StatusCode.UNIMPLEMENTED, 405)


class AsgiEndpoint:
    """An ASGI app as a route's endpoint (Starlette would call a plain function with a Request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class DirectRoutes:
    """An ASGI app: requests for `routes` (path regex, methods, endpoint) straight to their
    endpoint, everything else to `fallback` (the Starlette application)."""

    def __init__(self, fallback: Starlette, routes: list[tuple[str, tuple[str, ...], Endpoint]]) -> None:
        self.fallback = fallback
        self._routes = []
        for path, methods, endpoint in routes:
            regex, _, convertors = compile_path(path)  # Starlette's own: the same match, the same params
            self._routes.append((regex, convertors, frozenset(m.upper() for m in methods), endpoint))

    @property
    def routes(self) -> list[BaseRoute]:
        """Every route, as Starlette's router has them (the direct ones and /metrics)."""
        return self.fallback.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):  # a root path: Starlette strips it
            path, method = scope["path"], scope["method"]
            for regex, convertors, methods, endpoint in self._routes:
                match = regex.match(path)
                if match is not None and method in methods:  # else 405 (or HEAD) from Starlette
                    params = match.groupdict()
                    scope["path_params"] = {key: convertors[key].convert(value) for key, value in params.items()}
                    scope["app"] = self.fallback  # what Starlette sets for request.app
                    response = await endpoint(Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.fallback(scope, receive, send)


def create_app(
    family: Family,
    context: ServingContext,
    protocol: InferenceProtocol,
    *,
    serving: Callable[[], bool],
    draining: Callable[[], bool],
    rpc_methods: Mapping[str, grpc.RpcMethodHandler] | None = None,
) -> DirectRoutes:
    settings = context.settings
    routes = HttpRoutes()
    kserve.add_routes(routes, protocol, serving=serving, limit=settings.max_message_bytes)
    if family.add_routes is not None:
        family.add_routes(routes, context)
    add_model_routes(routes)
    rpc.add_routes(routes, rpc_methods or {}, limit=settings.max_message_bytes)
    wrapper = RouteWrapper(context.metrics, settings, draining)
    wrapped = [(r.path, r.methods, wrapper.wrap(r)) for r in routes.routes]
    table = [Route(path, endpoint, methods=list(methods)) for path, methods, endpoint in wrapped]
    table.append(Route("/metrics", AsgiEndpoint(make_asgi_app(context.metrics.registry)), methods=["GET"]))
    known = f"{routes.describe()}, GET /metrics"

    async def routing_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path[:100]
        if exc.status_code == 405:
            status = METHOD_NOT_ALLOWED
            message = f"{request.method} is not allowed on {path}; allowed: {(exc.headers or {}).get('Allow', '')}"
        else:
            status = STATUS_CODES[NotFound]
            message = f"no route {request.method} {path} on this {family.name} service; it answers: {known}"
        errors = openai_error if path.startswith("/v1/") else kserve_error
        return error_response(status, message, errors, exc.headers)

    starlette = Starlette(routes=table, exception_handlers={HTTPException: routing_error})
    return DirectRoutes(starlette, wrapped)
