"""A closed-loop gRPC load generator: N callers on one asyncio loop, each sending its next request
as soon as the previous answer arrives. Bounded in requests and in seconds; loopback only.

Requests are serialized once and sent as bytes, and answers are kept as bytes (the first one is
parsed by the caller to check it), so the generator spends its share of the two cores on gRPC
itself, the same way for every server it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

LOOPBACK = ("127.0.0.1:", "localhost:", "[::1]:")


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
    if not target.startswith(LOOPBACK):
        raise ValueError(f"the load generator only targets loopback addresses, not {target}")
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        await _phase(call, request, concurrency, max_requests, warmup_seconds, timeout)
        if on_measure is not None:
            on_measure()
        return await _phase(call, request, concurrency, max_requests, max_seconds, timeout)


async def _phase(
    call: grpc.aio.UnaryUnaryMultiCallable,
    request: bytes,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    timeout: float,
) -> LoadResult:
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]  # shared across callers: the run stops after this many requests
    started = time.perf_counter()
    stop_at = started + max_seconds

    async def caller() -> None:
        clock = time.perf_counter
        while budget[0] > 0 and clock() < stop_at:
            budget[0] -= 1
            sent = clock()
            try:
                await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            latencies.append(clock() - sent)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return LoadResult(
        concurrency=concurrency,
        requests=len(latencies),
        errors=len(errors),
        seconds=elapsed,
        latencies_s=np.array(latencies),
        first_error=errors[0] if errors else "",
    )
