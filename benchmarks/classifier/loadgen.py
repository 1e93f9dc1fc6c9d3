"""A closed-loop load generator: N callers on one asyncio loop, each sending its next request as
soon as the previous answer arrives. Bounded in requests and in seconds; loopback only.

gRPC: one channel for all callers (HTTP/2 multiplexes them). REST: one keep-alive HTTP/1.1
connection per caller (HTTP/1.1 answers one request at a time per connection, as every REST
client's pool does), the response parsed by httptools (the C parser uvicorn uses).

Requests are serialized once and sent as bytes, and answers are kept as bytes (the first one is
parsed by the caller to check it), so the generator spends its share of the two cores on the
protocol itself, the same way for every server it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httptools
import numpy as np

LOOPBACK = ("127.0.0.1:", "localhost:", "[::1]:")
Call = Callable[[], Awaitable[object]]  # one request; raises on failure


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_s: np.ndarray  # one per successful request
    first_error: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if len(self.latencies_s) else float("nan")


async def sample(target: str, method: str, request: bytes, *, timeout: float = 10.0) -> bytes:
    """One call, to check the answer before measuring."""
    async with grpc.aio.insecure_channel(target) as channel:
        answer: bytes = await channel.unary_unary(method)(request, timeout=timeout)
        return answer


async def run_load(
    target: str,
    method: str,
    request: bytes,
    concurrency: int,
    *,
    max_requests: int,
    max_seconds: float,
    warmup_seconds: float,
    timeout: float = 10.0,
    on_measure: Callable[[], None] | None = None,
) -> LoadResult:
    """Warm up, call `on_measure` (to snapshot counters), then measure; one channel throughout."""
    _check_loopback(target)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)

        async def one() -> object:
            return await call(request, timeout=timeout)

        calls = [one] * concurrency
        await _phase(calls, max_requests, warmup_seconds)
        if on_measure is not None:
            on_measure()
        return await _phase(calls, max_requests, max_seconds)


class RestError(Exception):
    pass


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: send pre-serialized requests, one at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []

    @classmethod
    async def open(cls, target: str) -> HttpConnection:
        _check_loopback(target)
        host, _, port = target.rpartition(":")
        _, connection = await asyncio.get_running_loop().create_connection(cls, host.strip("[]"), int(port))
        return connection

    async def request(self, payload: bytes, timeout: float = 10.0) -> bytes:
        """Send one whole request (line, headers, body); the body of a 200 answer, else RestError."""
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._body = []
        self._transport.write(payload)
        status, body = await asyncio.wait_for(self._answer, timeout)
        if status != 200:
            raise RestError(f"HTTP {status}: {body[:200]!r}")
        return body

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(f"the server closed the connection ({exc})"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))


def http_post(target: str, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A whole HTTP/1.1 POST request, serialized once."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def rest_sample(target: str, payload: bytes) -> bytes:
    connection = await HttpConnection.open(target)
    try:
        return await connection.request(payload)
    finally:
        connection.close()


async def run_rest_load(
    target: str,
    payload: bytes,
    concurrency: int,
    *,
    max_requests: int,
    max_seconds: float,
    warmup_seconds: float,
    on_measure: Callable[[], None] | None = None,
) -> LoadResult:
    """As run_load, over REST: `payload` is a whole request (http_post); one connection per caller."""
    connections = [await HttpConnection.open(target) for _ in range(concurrency)]
    try:
        calls: list[Call] = [lambda c=c: c.request(payload) for c in connections]  # type: ignore[misc]
        await _phase(calls, max_requests, warmup_seconds)
        if on_measure is not None:
            on_measure()
        return await _phase(calls, max_requests, max_seconds)
    finally:
        for connection in connections:
            connection.close()


def _check_loopback(target: str) -> None:
    if not target.startswith(LOOPBACK):
        raise ValueError(f"the load generator only targets loopback addresses, not {target}")


async def _phase(calls: list[Call], max_requests: int, max_seconds: float) -> LoadResult:
    """Each of `calls` is one caller's way to send a request; they run concurrently."""
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]  # shared across callers: the run stops after this many requests
    started = time.perf_counter()
    stop_at = started + max_seconds

    async def caller(call: Call) -> None:
        clock = time.perf_counter
        while budget[0] > 0 and clock() < stop_at:
            budget[0] -= 1
            sent = clock()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            except (RestError, ConnectionError, TimeoutError) as exc:
                errors.append(str(exc))
                if not isinstance(exc, RestError):
                    return  # the connection is gone
                continue
            latencies.append(clock() - sent)

    await asyncio.gather(*(caller(call) for call in calls))
    elapsed = time.perf_counter() - started
    return LoadResult(
        concurrency=len(calls),
        requests=len(latencies),
        errors=len(errors),
        seconds=elapsed,
        latencies_s=np.array(latencies),
        first_error=errors[0] if errors else "",
    )
