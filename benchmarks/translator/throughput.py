"""Translator throughput: sentences/s through the service at 1, 8 and 32 concurrent callers.

    flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/translator/throughput.py \
        --repository model_repository --model translator-tatoeba --repeats 3

`myelin-serve translator` runs in a child process on loopback; here, N callers share one
AsyncClient and each sends one sentence per request, the next as soon as the last is answered
(a closed loop), until --requests sentences are translated. Greedy search (beam 1) and beam
search (--beam) are measured at every concurrency. A round runs every measurement once, so that
load from outside falls on all of them alike; the table gives the median of --repeats rounds and
the spread (min-max / median). Client and service share this machine's cores.
The service inherits this process's environment, so MYELIN_* variables configure it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from generator_throughput import start_service

from myelin_client import AsyncClient

SENTENCES = [
    "I am hungry.",
    "Where is the station?",
    "She reads a book every week.",
    "We will go to the beach tomorrow if it does not rain.",
    "He did not know what to say.",
    "Can you help me, please?",
    "The children are playing in the garden.",
    "I have lived in this city for ten years.",
    "Tom is taller than his brother.",
    "It is too late to change our plans now.",
    "Do you like coffee?",
    "They were very happy to see us again.",
]


async def measure(target: str, model: str, concurrency: int, requests: int, beam_size: int) -> float:
    """Sentences/s of `concurrency` closed-loop callers translating `requests` sentences in all."""
    sentences = itertools.cycle(SENTENCES)
    left = requests
    async with AsyncClient(target, timeout=300) as client:
        await client.wait_ready()  # connected before the clock starts

        async def caller() -> int:
            nonlocal left
            done = 0
            while left > 0:
                left -= 1
                result = await client.translate(next(sentences), model=model, beam_size=beam_size)
                done += len(result.translations)
            return done

        started = time.perf_counter()
        counts = await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    assert sum(counts) == requests, counts
    return requests / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="translator-tatoeba")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--beam", type=int, default=4, help="beam size of the beam-search rows")
    parser.add_argument("--requests", type=int, default=128, help="sentences per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    parser.add_argument("--verbose", action="store_true", help="print every round's figures too")
    args = parser.parse_args(argv)
    print(
        f"{args.model}, {args.requests} sentences per measurement (one per request), {os.cpu_count()} CPUs, "
        f"median of {args.repeats} rounds"
    )
    cases = [(beam, n) for beam in (1, args.beam) for n in args.concurrency]
    runs: dict[tuple[int, int], list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        process, target, _ = start_service(args.repository, Path(tmp), args.threads, family="translator")
        try:
            for beam, n in cases:  # warm up every shape the rounds will see
                asyncio.run(measure(target, args.model, n, max(n, 8), beam))
            for _ in range(args.repeats):
                for beam, n in cases:
                    runs[beam, n].append(asyncio.run(measure(target, args.model, n, args.requests, beam)))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    print(f"\n| {'search':<8} | {'callers':>7} | {'sentences/s':>11} | {'spread':>7} |")
    print(f"|{'-' * 10}|{'-' * 9}|{'-' * 13}|{'-' * 9}|")
    for (beam, n), rates in runs.items():
        median = statistics.median(rates)
        search = "greedy" if beam == 1 else f"beam {beam}"
        print(f"| {search:<8} | {n:>7} | {median:11.1f} | {(max(rates) - min(rates)) / median:6.1%} |")
        if args.verbose:
            print("    rounds: " + ", ".join(f"{r:.1f}" for r in rates))


if __name__ == "__main__":
    main()
