"""`make soak`: a soak test, bounded in time, loopback only, at concurrency 64 across the services.

    python scripts/soak.py --repository DIR [--duration 300] [--concurrency 64] [--warmup 15] [--window 30]
                           [--state-dir .soak] [--json FILE]

Starts one `myelin-serve` per family the repository holds (as `make up` does, on free ports), and
`--concurrency` callers that send each family's well-formed requests (`workload()` of its module in
tests/harness/families/: its own API, KServe ModelInfer, Models, health) round-robin over the
services for `--duration` seconds. Then it stops the services with SIGTERM and reports: requests,
errors by status, lost requests (sent, never answered), p50/p99 latency in the first and last
`--window` seconds after the warm-up, and each service's resident memory when the warm-up ended and
at the end.

Exit status 1 when any request failed with anything but RESOURCE_EXHAUSTED (a deliberate overload
refusal), a request was lost, a service's RSS grew by 10 % or more, or a service did not exit cleanly.
A family joins with its module's `workload()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from harness.families import WORKLOADS
from harness.rpcs import Request
from myelin_serving.launch import families_in, port_order, start_service, wait_serving

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS_GROWTH = 0.10
# Refusals a service makes on purpose under overload; anything else is an error.
OVERLOAD = "RESOURCE_EXHAUSTED"


@dataclass
class Sample:
    done: float  # seconds since the start of the load
    seconds: float
    family: str
    method: str
    code: str


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def caller(
    index: int, targets: list[tuple[str, grpc.aio.Channel, list[Request]]], run: Run, start: float, stop_at: float
) -> None:
    family, channel, requests = targets[index % len(targets)]
    stubs = [(method, channel.unary_unary(method), payload) for method, payload in requests]
    turn = index  # callers start at different requests, so every request kind is in flight at once
    while time.monotonic() < stop_at:
        method, stub, payload = stubs[turn % len(stubs)]
        turn += 1
        run.sent += 1
        began = time.monotonic()
        try:
            await stub(payload, timeout=30)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        now = time.monotonic()
        run.samples.append(Sample(now - start, now - began, family, method, code))


async def load(
    services: dict[str, str], concurrency: int, duration: float, warmup: float, pids: dict[str, int]
) -> tuple[Run, dict[str, int], dict[str, int]]:
    """Returns the run, and each service's RSS when the warm-up ended and at the end."""
    channels = {family: grpc.aio.insecure_channel(target) for family, target in services.items()}
    targets = [(family, channels[family], WORKLOADS[family]()) for family in services]
    run = Run()
    start = time.monotonic()
    tasks = [asyncio.create_task(caller(i, targets, run, start, start + duration)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    rss_start = {family: rss_bytes(pid) for family, pid in pids.items()}
    await asyncio.gather(*tasks)
    rss_end = {family: rss_bytes(pid) for family, pid in pids.items()}
    for channel in channels.values():
        await channel.close()
    return run, rss_start, rss_end


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) * 1000 if values else None


def report(
    run: Run,
    *,
    duration: float,
    warmup: float,
    window: float,
    concurrency: int,
    rss_start: dict[str, int],
    rss_end: dict[str, int],
    exit_codes: dict[str, int | None],
) -> dict[str, Any]:
    codes = Counter(s.code for s in run.samples)
    first = [s.seconds for s in run.samples if warmup <= s.done < warmup + window]
    last = [s.seconds for s in run.samples if duration - window <= s.done]
    by_family = {
        family: dict(Counter(s.code for s in run.samples if s.family == family))
        for family in sorted({s.family for s in run.samples})
    }
    growth = {f: (rss_end[f] - rss_start[f]) / rss_start[f] for f in rss_start}
    errors = {code: n for code, n in codes.items() if code not in ("OK", OVERLOAD)}
    lost = run.sent - len(run.samples)
    ok = not errors and lost == 0 and all(g < MAX_RSS_GROWTH for g in growth.values())
    ok = ok and all(code == 0 for code in exit_codes.values())
    return {
        "duration_s": duration,
        "warmup_s": warmup,
        "window_s": window,
        "concurrency": concurrency,
        "requests": run.sent,
        "answered": len(run.samples),
        "lost": lost,
        "throughput_rps": round(len(run.samples) / duration, 1),
        "status": dict(sorted(codes.items())),
        "status_by_family": by_family,
        "overload_refusals": codes.get(OVERLOAD, 0),
        "errors": errors,
        "p50_ms": {"start": percentile(first, 50), "end": percentile(last, 50)},
        "p99_ms": {"start": percentile(first, 99), "end": percentile(last, 99)},
        "rss_mib": {
            f: {"start": round(rss_start[f] / 2**20, 1), "end": round(rss_end[f] / 2**20, 1)} for f in rss_start
        },
        "rss_growth_pct": {f: round(100 * g, 2) for f, g in growth.items()},
        "exit_codes": exit_codes,
        "passed": ok,
    }


def print_report(result: dict[str, Any]) -> None:
    p50, p99 = result["p50_ms"], result["p99_ms"]
    lines = [
        f"soak: {result['duration_s']:.0f} s at concurrency {result['concurrency']} "
        f"(first {result['warmup_s']:.0f} s warm-up; windows of {result['window_s']:.0f} s)",
        f"requests {result['requests']}, answered {result['answered']}, lost {result['lost']}, "
        f"{result['throughput_rps']} req/s",
        "status: " + ", ".join(f"{code} {n}" for code, n in result["status"].items()),
        f"latency p50 {_ms(p50['start'])} -> {_ms(p50['end'])}, p99 {_ms(p99['start'])} -> {_ms(p99['end'])}",
    ]
    for family, rss in result["rss_mib"].items():
        lines.append(
            f"{family}: RSS {rss['start']} MiB -> {rss['end']} MiB ({result['rss_growth_pct'][family]:+.2f} %), "
            f"exit code {result['exit_codes'][family]}"
        )
    lines.append("PASSED" if result["passed"] else "FAILED")
    print("\n".join(lines), flush=True)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            return None
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--duration", type=float, default=300, help="seconds of load, warm-up included")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=15, help="seconds before the start figures")
    parser.add_argument("--window", type=float, default=30, help="seconds of the start and end latency windows")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".soak", help="service logs and port files")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    if args.warmup + 2 * args.window > args.duration:
        parser.error("--duration must cover the warm-up and two windows")
    if not args.repository.is_dir():
        parser.error(f"no model repository at {args.repository}: train first (make demo), or pass --repository")
    families = [f for f in port_order() if f in families_in(args.repository) and f in WORKLOADS]
    if not families:
        parser.error(f"{args.repository} holds no model of a family with a workload ({', '.join(WORKLOADS)})")
    shutil.rmtree(args.state_dir, ignore_errors=True)
    args.state_dir.mkdir(parents=True)
    processes = {f: start_service(f, args.repository, args.state_dir, 0) for f in families}
    exit_codes: dict[str, int | None] = {}
    try:
        services = {f: wait_serving(f, processes[f], args.state_dir).target for f in families}
        pids = {f: p.pid for f, p in processes.items()}
        print(f"soak: {', '.join(families)} serving; {args.concurrency} callers for {args.duration:.0f} s", flush=True)
        run, rss_start, rss_end = asyncio.run(load(services, args.concurrency, args.duration, args.warmup, pids))
    finally:
        for family, process in processes.items():
            exit_codes[family] = stop(process)
    result = report(
        run,
        duration=args.duration,
        warmup=args.warmup,
        window=args.window,
        concurrency=args.concurrency,
        rss_start=rss_start,
        rss_end=rss_end,
        exit_codes=exit_codes,
    )
    result["locked"] = os.environ.get("MYELIN_SOAK_LOCKED") == "1"
    print_report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
