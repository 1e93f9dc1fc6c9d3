"""Closed-loop load through the SDK (tests/harness/load.py), as a command for a container.

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
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# ClosedLoop lives in the test harness (tests/harness/load.py); compose mounts it at /scripts/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.load import ClosedLoop
from myelin_client import AsyncClient


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
