"""The limit: onnxruntime called in-process, no network, no queue, at a given batch size.

Uses the services' own OnnxGraph, so the session is built exactly as the server builds it. The
reference for the 'vs in-process' ratio uses the SAME session options as the servers under test
(their intra-op thread count), so the ratio measures what serving costs on top of the model; the
fastest thread count is measured beside it and printed, as the best this machine can do in-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from myelin_serving.runtime import OnnxGraph, RuntimeOptions


@dataclass(frozen=True)
class InProcessResult:
    batch: int
    threads: int
    rows_per_s: float
    p50_ms: float  # one session.run of `batch` rows
    p99_ms: float
    cpu_us_per_row: float  # CPU time of this process (all onnxruntime threads) per row


def measure(path: Path, batch: int, *, threads: int, seconds: float, max_runs: int = 100_000) -> InProcessResult:
    graph = OnnxGraph(path, RuntimeOptions(device="cpu", intra_op_threads=threads))
    name = graph.inputs[0].name
    pixels = np.random.default_rng(0).random((batch, 28, 28), dtype=np.float32)  # (B, 28, 28)
    for _ in range(20):  # warm-up: first runs allocate
        graph.run({name: pixels})
    times: list[float] = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    while len(times) < max_runs and time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        graph.run({name: pixels})
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    runs = np.array(times)
    return InProcessResult(
        batch=batch,
        threads=threads,
        rows_per_s=len(runs) * batch / elapsed,
        p50_ms=float(np.percentile(runs, 50) * 1000),
        p99_ms=float(np.percentile(runs, 99) * 1000),
        cpu_us_per_row=cpu / (len(runs) * batch) * 1e6,
    )


def reference(
    path: Path, batch: int, *, threads: int, seconds: float, thread_counts: tuple[int, ...]
) -> list[InProcessResult]:
    """One result per thread count: `threads` (the servers' setting) and every count in `thread_counts`."""
    return [measure(path, batch, threads=t, seconds=seconds) for t in sorted({threads, *thread_counts})]
