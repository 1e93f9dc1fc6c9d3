"""Closed-loop load through the SDK, recording every call (the replica tests, the scale-out benchmark
and scripts/myelin_load.py, which runs it inside the compose network).

Only the standard library here: the compose client container imports it beside the SDK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    started: float  # time.monotonic()
    ended: float
    code: str  # "OK" or the status code's name


class ClosedLoop:
    """`concurrency` callers on the running event loop, each awaiting `call()` again as soon as the
    last one ended, until `stop()`; every call is recorded. A failed call is recorded, not raised."""

    def __init__(self, call: Callable[[], Awaitable[Any]], concurrency: int) -> None:
        self._call = call
        self.calls: list[Call] = []
        self._stopping = asyncio.Event()
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(concurrency)]

    async def _caller(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._call()
                code = "OK"
            except Exception as exc:  # the SDK's MyelinError, or whatever else a call raised
                code = getattr(getattr(exc, "code", None), "name", type(exc).__name__)
            self.calls.append(Call(started, time.monotonic(), code))

    def failed(self, since: float = 0.0) -> list[Call]:
        return [c for c in self.calls if c.code != "OK" and c.ended >= since]

    def ok(self, since: float = 0.0) -> int:
        return sum(1 for c in self.calls if c.code == "OK" and c.started >= since)

    async def wait_calls(self, count: int, *, since: float = 0.0, timeout: float = 60) -> None:
        """Until `count` calls started at `since` or later have succeeded."""
        deadline = time.monotonic() + timeout
        while self.ok(since) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.ok(since)} of {count} calls succeeded in {timeout:.0f} s")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)
