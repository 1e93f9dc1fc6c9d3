"""Scale-out on one machine: calls/s with one and with two replicas of the MLP, and failover figures.

    flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/scaleout.py [--repeats 3] [--seconds 8]

Replicas are `myelin-serve classifier` processes on 127.0.0.1 and 127.0.0.2, one port, one
onnxruntime thread each (MYELIN_INTRA_OP_THREADS=1, as the Kubernetes manifests set), serving
mnist-mlp exported by `myelin-train mlp --config quick --dry-run --publish` into .bench/scaleout (the
quick config's graph, trained for seconds: speed, not accuracy, is measured; reused when there).
The load is one AsyncClient with the SDK's default options (round robin, health checking, 4
attempts on UNAVAILABLE) and 32 closed-loop callers classifying one 28x28 image each, in this
process: it shares the machine's cores with the replicas, so the figures say what one machine gives,
not what a replica gives on cores of its own.

1. Throughput: `--seconds` of load after a 2 s warm-up, one replica then two, `--repeats` times.
2. Failover: two replicas under the same load; after 3 s one is killed (SIGKILL); 3 s more. Reported:
   calls answered in the second before and the second after the kill, failed calls, calls in flight
   at the kill (started before it, answered after it) and how long after the kill the last of them
   was answered (by then the killed replica's share has moved), and the attempts the client's
   channel saw fail on the killed replica (gRPC's channelz; one of them is its health-check stream,
   the others were calls, each retried on the live replica).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test harness: replicas and closed-loop load
from harness.load import ClosedLoop  # noqa: E402
from harness.replicas import ReplicaSet, channel_attempts  # noqa: E402
from myelin_client import AsyncClient  # noqa: E402

BIN = Path(sys.executable).parent

REPOSITORY = ROOT / ".bench" / "scaleout"
CONCURRENCY = 32
DIGIT = np.random.default_rng(7).integers(0, 256, (1, 28, 28), dtype=np.uint8)
ENV = {"MYELIN_INTRA_OP_THREADS": "1", "MYELIN_LOG_LEVEL": "WARNING", "MYELIN_RELOAD_INTERVAL_S": "0"}


def ensure_mlp(data_dir: Path) -> None:
    if (REPOSITORY / "mnist-mlp" / "1" / "model.onnx").exists():
        return
    print(f"exporting mnist-mlp (quick config, dry run) into {REPOSITORY}", flush=True)
    command = [str(BIN / "myelin-train"), "mlp", "--config", "quick", "--dry-run", "--publish"]
    command += ["--data-dir", str(data_dir)]
    command += ["--repository", str(REPOSITORY), "--run-dir", str(ROOT / ".bench" / "scaleout-run")]
    subprocess.run(command, check=True)


async def throughput(replicas: ReplicaSet, seconds: float) -> float:
    async with AsyncClient(replicas.target, timeout=30) as client:
        await client.wait_ready()
        load = ClosedLoop(lambda: client.classify(DIGIT, model="mnist-mlp"), CONCURRENCY)
        await asyncio.sleep(2.0)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        rate = load.ok(since=started) / (time.monotonic() - started)
        await load.stop()
    if load.failed():
        raise SystemExit(f"{len(load.failed())} calls failed during the throughput run")
    return rate


async def failover(replicas: ReplicaSet) -> dict[str, float]:
    victim = replicas.replicas[1]
    async with AsyncClient(replicas.target, timeout=30) as client:
        await client.wait_ready()
        load = ClosedLoop(lambda: client.classify(DIGIT, model="mnist-mlp"), CONCURRENCY)
        await asyncio.sleep(3.0)
        _, before = channel_attempts(replicas.target)
        killed_at = time.monotonic()
        victim.kill()
        await asyncio.sleep(3.0)
        await load.stop()
        _, after = channel_attempts(replicas.target)
    in_flight = [c for c in load.calls if c.started < killed_at < c.ended]
    return {
        "before": sum(1 for c in load.calls if killed_at - 1 <= c.ended < killed_at and c.code == "OK"),
        "after": sum(1 for c in load.calls if killed_at <= c.ended < killed_at + 1 and c.code == "OK"),
        "failed": len(load.failed()),
        "in_flight": len(in_flight),
        "moved_ms": max((c.ended - killed_at for c in in_flight), default=0.0) * 1000,
        "failed_attempts": after[victim.address].failed - before[victim.address].failed,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.0f} (min {min(values):.0f}, max {max(values):.0f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per throughput run")
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("MYELIN_DATA_DIR", ROOT.parent / "shared" / "data"))
    ensure_mlp(data_dir)
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)", flush=True)
    rates: dict[int, list[float]] = {1: [], 2: []}
    failovers: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="myelin-scaleout-") as tmp:
        for repeat in range(args.repeats):
            for count in (1, 2):
                with ReplicaSet("classifier", REPOSITORY, Path(tmp) / f"{repeat}-{count}", count, ENV) as replicas:
                    rates[count].append(asyncio.run(throughput(replicas, args.seconds)))
                print(f"run {repeat + 1}: {count} replica(s) {rates[count][-1]:.0f} calls/s", flush=True)
            with ReplicaSet("classifier", REPOSITORY, Path(tmp) / f"{repeat}-kill", 2, ENV) as replicas:
                failovers.append(asyncio.run(failover(replicas)))
            print(f"run {repeat + 1}: failover {failovers[-1]}", flush=True)
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print(f"\nmnist-mlp, concurrency {CONCURRENCY}, {args.repeats} runs (mean, min, max):\n")
    print("| replicas | calls/s |\n|---|---|")
    for count in (1, 2):
        print(f"| {count} | {spread(rates[count])} |")
    print(f"\ntwo replicas / one: {statistics.mean(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})\n")
    print("| SIGKILL of one of two replicas | " + " | ".join(f"run {i + 1}" for i in range(len(failovers))) + " |")
    print("|---" * (len(failovers) + 1) + "|")
    rows = {
        "calls answered in the second before the kill": "before",
        "calls answered in the second after the kill": "after",
        "failed calls": "failed",
        "calls in flight at the kill (every caller has one; all answered)": "in_flight",
        "the last of them answered, ms after the kill": "moved_ms",
        "attempts failed on the killed replica (channelz; its health-check stream is one)": "failed_attempts",
    }
    for label, key in rows.items():
        print(f"| {label} | " + " | ".join(f"{f[key]:.0f}" for f in failovers) + " |")


if __name__ == "__main__":
    main()
