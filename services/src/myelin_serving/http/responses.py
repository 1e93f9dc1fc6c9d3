"""What the HTTP door answers with: JSON bodies, the error table's answers, server-sent events, and
work that stops when the client hangs up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from myelin_serving.errors import Cancelled, Status

T = TypeVar("T")
# (status, message) -> the JSON body of an error answer.
ErrorBody = Callable[[Status, str], dict[str, Any]]


def kserve_error(status: Status, message: str) -> dict[str, Any]:
    """The Open Inference Protocol's error body: `{"error": "<message>"}`."""
    return {"error": message}


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # orjson: a KServe body of a few thousand floats is encoded in microseconds (the stdlib takes 10x);
    # numpy arrays are written directly (float32 in their shortest form).
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type="application/json"
    )


def error_response(
    status: Status, message: str, errors: ErrorBody = kserve_error, headers: Mapping[str, str] | None = None
) -> Response:
    if status.http == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return json_response(errors(status, message), status.http, headers)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or CancelledError for it and Cancelled here the moment the client hangs up
    (a plain response is not written until `work` is done: without this nobody would notice)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request is cancelled itself (its deadline): the work goes with it
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise Cancelled("the client went away")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def sse_event(body: Any) -> bytes:
    """One server-sent event carrying `body` as JSON."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


class EventStream(StreamingResponse):
    """Server-sent events. However the response ends (finished, the client gone, the server
    stopping), its body iterator is closed here, so the generators behind it run their `finally`
    at once rather than whenever they are garbage-collected."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        # No caching, and no buffering in proxies (nginx) between the events and the client.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await close_iterator(self.body_iterator)


async def close_iterator(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
