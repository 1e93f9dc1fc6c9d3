"""Closed-loop load through the SDK, recording every call; also a command for a container.

`ClosedLoop` runs callers that each send the next call as soon as the last one ended, and records
each call's start, end and status (the replica tests and the scale-out benchmark use it).

    python myelin_load.py --target dns:///classifier:50051 --stop-file PATH [--concurrency 16] [--max-seconds 300]

runs the classifier's mnist-mlp under closed-loop load with the SDK's default options until PATH
exists (or for --max-seconds), then prints a JSON summary: calls answered, failed calls by status.
`make compose-test` runs it inside the compose network, where `classifier` resolves, in Docker's
DNS, to every replica. It needs only the SDK and numpy (the training image has both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from myelin_client import AsyncClient


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


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


async def run(target: str, concurrency: int, stop_file: Path, max_seconds: float) -> dict[str, Any]:
    digit = np.zeros((1, 28, 28), np.uint8)
    async with AsyncClient(target, timeout=30) as client:
        await client.wait_ready(timeout=120)
        load = ClosedLoop(lambda: client.classify(digit, model="mnist-mlp"), concurrency)
        print("load started", flush=True)
        await asyncio.to_thread(wait_for_file, stop_file, max_seconds)
        await load.stop()
    return {"ok": load.ok(), "failed": dict(Counter(c.code for c in load.failed()))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--stop-file", type=Path, required=True, help="stop once this file exists")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.target, args.concurrency, args.stop_file, args.max_seconds))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
