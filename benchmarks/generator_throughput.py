"""Generator throughput: the service against a plain onnxruntime decode loop, and 8 streams against 1.

    flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/generator_throughput.py \
        --repository model_repository --model generator-gpt-shakespeare

Prints, in one run:
1. tokens/s of a plain onnxruntime loop over the same step graph (prefill, then one token per
   call, the GPT's cache buffers written in place, the same numpy temperature sampling), in this
   process, no gRPC; with --threads and with one intra-op thread (onnxruntime's default session
   options otherwise, spinning threads included), the faster of the two being the reference;
2. tokens/s of ONE stream through the service (`myelin-serve generator` in a child process, the
   SDK here, its channel connected first), from sending the request to receiving the last token;
   target >= 0.8 x (1);
3. aggregate tokens/s of 8 concurrent streams through the service; target >= 3 x (2);
4. with --sse, (2) and (3) again over HTTP: `POST /v1/completions` with `stream: true`, read as
   server-sent events on keep-alive connections opened first (one per stream), the same seeds;
   target >= 0.9 x the gRPC figure. `make bench` runs `compare_sse` (2 to 4 only) on the quick GPT,
   with the service's CPU time per token beside each figure.
Each figure is the median of --repeats rounds; a round runs each measurement once, so that load
from outside falls on all of them alike. Client, service and loop share this machine's cores.
The service inherits this process's environment, so MYELIN_* variables configure it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from tokenizers import Tokenizer

from myelin_client import AsyncClient, Client

sys.path.insert(0, str(Path(__file__).parent / "classifier"))
import loadgen

BIN = Path(sys.executable).parent
THREADS = {0: "default threads", 1: "1 thread"}


def plain_loop(version_dir: Path, prompt: str, tokens: int, temperature: float, seed: int, threads: int) -> float:
    """tokens/s of the simplest decode loop over the step graph: the reference the service is held to."""
    manifest = json.loads((version_dir / "model.json").read_text())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(version_dir / "step.onnx"), options, providers=["CPUExecutionProvider"])
    ids = Tokenizer.from_file(str(version_dir / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    rng = np.random.default_rng(seed)
    decoder = manifest["decoder"]

    def sample(logits: np.ndarray) -> int:
        x = logits.astype(np.float64) / temperature
        p = np.exp(x - x.max())
        return int(rng.choice(p.size, p=p / p.sum()))

    started = time.perf_counter()
    if decoder["cache"] == "kv":
        # The graph reads the cache buffers and returns the new keys/values, written in place here
        # (keys are stored (1, H, D, S), values (1, H, S, D)); the buffers grow by 32 slots at a
        # time, as in the service: attention over unfilled slots is wasted work, one copy per 32
        # tokens is not.
        s, names = decoder["cache_shape"], decoder["cache_inputs"]
        axes = [decoder["slot_axis"][name.rsplit(".", 1)[1]] for name in names]

        def slots(buffer: np.ndarray, axis: int) -> np.ndarray:
            return np.moveaxis(buffer, axis, 2)  # a (1, H, S, D) view of either layout

        def empty(n: int) -> list[np.ndarray]:
            return [
                np.zeros((1, s["heads"], s["head_dim"], n) if a == 3 else (1, s["heads"], n, s["head_dim"]), np.float32)
                for a in axes
            ]

        cache, padding = empty(0), np.zeros(1, np.int64)
        x, length = np.array([ids]), 0
        for _ in range(tokens):
            end = length + x.shape[1]
            if end > slots(cache[0], axes[0]).shape[2]:
                grown = empty(end // 32 * 32 + 32)
                for axis, new, old in zip(axes, grown, cache, strict=True):
                    slots(new, axis)[:, :, :length] = slots(old, axis)[:, :, :length]
                cache = grown
            feeds = {
                "input_ids": x,
                "padding": padding,
                "length": np.array(length),
                **dict(zip(names, cache, strict=True)),
            }
            logits, *new = session.run(None, feeds)
            for axis, buffer, values in zip(axes, cache, new, strict=True):
                slots(buffer, axis)[:, :, length:end] = slots(values, axis)
            length = end
            x = np.array([[sample(logits[0])]])
    else:
        s = decoder["state_shape"]
        state = np.zeros((s["layers"], 1, s["hidden"]), np.float32)
        logits, state = session.run(None, {"input_ids": np.array([ids]), "state": state})
        token = sample(logits[0])
        for _ in range(tokens - 1):
            logits, state = session.run(None, {"input_ids": np.array([[token]]), "state": state})
            token = sample(logits[0])
    return tokens / (time.perf_counter() - started)


def one_stream(target: str, model: str, prompt: str, tokens: int, temperature: float, seed: int) -> float:
    with Client(target, timeout=300) as client:
        client.wait_ready()  # connected before the clock starts, as a client that reuses its channel is
        started = time.perf_counter()
        with client.generate(prompt, model=model, max_new_tokens=tokens, temperature=temperature, seed=seed) as s:
            received = sum(len(chunk.token_ids) for chunk in s)
        elapsed = time.perf_counter() - started
    assert received == tokens, f"got {received} tokens, wanted {tokens}"
    return tokens / elapsed


async def many_streams(
    target: str, model: str, prompt: str, tokens: int, temperature: float, seeds: list[int]
) -> float:
    async with AsyncClient(target, timeout=300) as client:

        async def one(seed: int) -> int:
            async with client.generate(
                prompt, model=model, max_new_tokens=tokens, temperature=temperature, seed=seed
            ) as stream:
                return sum([len(chunk.token_ids) async for chunk in stream])

        await client.wait_ready()
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(seed) for seed in seeds))
        elapsed = time.perf_counter() - started
    assert counts == [tokens] * len(seeds), counts
    return len(seeds) * tokens / elapsed


async def sse_streams(target: str, model: str, prompt: str, tokens: int, temperature: float, seeds: list[int]) -> float:
    """Aggregate tokens/s of len(seeds) concurrent SSE streams (one connection each, opened first)."""
    connections = [await loadgen.HttpConnection.open(target) for _ in seeds]
    try:

        async def one(connection: loadgen.HttpConnection, seed: int) -> int:
            body = {
                "model": model, "prompt": prompt, "max_tokens": tokens, "temperature": temperature, "seed": seed,
                "stream": True, "stream_options": {"include_usage": True},
            }  # fmt: skip
            answer = await connection.request(loadgen.http_post(target, "/v1/completions", orjson.dumps(body)), 300)
            events = [e.removeprefix(b"data: ") for e in answer.split(b"\n\n") if e]
            assert events[-1] == b"[DONE]", events[-1][:200]
            chunks = [orjson.loads(e) for e in events[:-1]]  # every event parsed, as a client does
            completion_tokens: int = chunks[-1]["usage"]["completion_tokens"]
            return completion_tokens

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(c, seed) for c, seed in zip(connections, seeds, strict=True)))
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    assert counts == [tokens] * len(seeds), counts
    return len(seeds) * tokens / elapsed


def compare_sse(
    repository: Path,
    model: str,
    *,
    tokens: int = 200,
    streams: int = 8,
    repeats: int = 5,
    threads: int = 0,
    prompt: str = "ROMEO:",
    temperature: float = 0.8,
) -> dict[str, object]:
    """tokens/s of 1 and `streams` streams over gRPC and over SSE, `repeats` interleaved rounds each, and
    the service's CPU time per token in each (what the door costs, whatever else the machine runs)."""
    runs: dict[str, list[float]] = {"grpc 1": [], "sse 1": [], "grpc n": [], "sse n": []}
    cpu: dict[str, float] = dict.fromkeys(runs, 0.0)  # service CPU seconds, all rounds
    with tempfile.TemporaryDirectory() as tmp:
        process, target, http = start_service(repository, Path(tmp), threads)
        try:
            one_stream(target, model, prompt, 20, temperature, 0)  # warm up both doors
            asyncio.run(sse_streams(http, model, prompt, 20, temperature, [0]))

            def measure(name: str, seeds: list[int]) -> float:
                if name == "grpc 1":
                    return one_stream(target, model, prompt, tokens, temperature, seeds[0])
                if name == "grpc n":
                    return asyncio.run(many_streams(target, model, prompt, tokens, temperature, seeds))
                return asyncio.run(sse_streams(http, model, prompt, tokens, temperature, seeds))

            for i in range(repeats):
                for name in runs:
                    seeds = [i] if name.endswith("1") else list(range(i * streams, (i + 1) * streams))
                    before = process_cpu(process.pid)
                    runs[name].append(measure(name, seeds))
                    cpu[name] += process_cpu(process.pid) - before
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    medians = {name: statistics.median(rates) for name, rates in runs.items()}
    counts = {name: tokens * repeats * (1 if name.endswith("1") else streams) for name in runs}
    cpu_us = {name: cpu[name] / counts[name] * 1e6 for name in runs}
    for name, rates in runs.items():
        print(
            f"  {name:7} {medians[name]:8.0f} tokens/s, service CPU {cpu_us[name]:4.0f} us/token "
            f"(rounds: {', '.join(f'{r:.0f}' for r in rates)})",
            flush=True,
        )
    return {
        "model": model,
        "tokens": tokens,
        "streams": streams,
        "repeats": repeats,
        "runs": runs,
        "medians": medians,
        "cpu_us_per_token": cpu_us,
    }


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (from /proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(
    repository: Path, tmp: Path, threads: int, *, family: str = "generator"
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`myelin-serve FAMILY` on free loopback ports, ready: its gRPC and HTTP addresses (the translator
    benchmark uses it too)."""
    port_file = tmp / "port.json"
    env = {**os.environ, "MYELIN_INTRA_OP_THREADS": str(threads), "MYELIN_RELOAD_INTERVAL_S": "0"}
    process = subprocess.Popen(
        [
            BIN / "myelin-serve",
            family,
            "--repository",
            repository,
            "--port",
            "0",
            "--http-port",
            "0",
            "--port-file",
            port_file,
        ],
        stdout=(tmp / "service.log").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"myelin-serve failed:\n{(tmp / 'service.log').read_text()}")
            try:  # the file may exist before its content is written
                ports = json.loads(port_file.read_text())
                target, http = f"127.0.0.1:{ports['port']}", f"127.0.0.1:{ports['http_port']}"
                break
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.1)
        with Client(target) as client:
            client.wait_ready(timeout=120)
    except BaseException:
        process.kill()  # never leave the service behind
        process.wait()
        raise
    return process, target, http


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="generator-gpt-shakespeare")
    parser.add_argument("--version", type=int, default=0, help="0: the newest in the repository")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per stream")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads, both sides (0: default)")
    parser.add_argument("--verbose", action="store_true", help="print every round's figures too")
    parser.add_argument("--sse", action="store_true", help="also stream over HTTP (server-sent events)")
    args = parser.parse_args(argv)
    versions = sorted(int(p.name) for p in (args.repository / args.model).iterdir() if p.name.isdigit())
    version_dir = args.repository / args.model / str(args.version or versions[-1])
    manifest = json.loads((version_dir / "model.json").read_text())
    print(
        f"{args.model} v{manifest['version']} ({manifest['architecture']}, "
        f"{manifest['training']['parameters'] / 1e6:.2f} M parameters), {args.tokens} new tokens per stream, "
        f"temperature {args.temperature}, prompt {args.prompt!r}, {os.cpu_count()} CPUs, median of {args.repeats}"
    )

    # The reference is the faster plain loop: with --threads, or with one thread.
    # The measurements are interleaved, one round of each per repeat, so that load from outside
    # (other work on the machine between or during rounds) falls on all of them alike.
    thread_counts = sorted({args.threads, 1})
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        process, target, http = start_service(args.repository, Path(tmp), args.threads)
        try:
            for threads in thread_counts:
                plain_loop(version_dir, args.prompt, 20, args.temperature, 0, threads)  # warm up
            one_stream(target, args.model, args.prompt, 20, args.temperature, 0)  # warm up the service
            for i in range(args.repeats):
                for threads in thread_counts:
                    rate = plain_loop(version_dir, args.prompt, args.tokens, args.temperature, i, threads)
                    runs.setdefault(f"plain {threads}", []).append(rate)
                rate = one_stream(target, args.model, args.prompt, args.tokens, args.temperature, i)
                runs.setdefault("single", []).append(rate)
                seeds = list(range(args.streams))
                rate = asyncio.run(many_streams(target, args.model, args.prompt, args.tokens, args.temperature, seeds))
                runs.setdefault("many", []).append(rate)
                if args.sse:
                    rate = asyncio.run(sse_streams(http, args.model, args.prompt, args.tokens, args.temperature, [i]))
                    runs.setdefault("sse single", []).append(rate)
                    rate = asyncio.run(sse_streams(http, args.model, args.prompt, args.tokens, args.temperature, seeds))
                    runs.setdefault("sse many", []).append(rate)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    if args.verbose:
        for name, rates in runs.items():
            print(f"{name}: " + ", ".join(f"{r:.0f}" for r in rates))
    plains = {t: statistics.median(runs[f"plain {t}"]) for t in thread_counts}
    plain = max(plains.values())
    single, many = statistics.median(runs["single"]), statistics.median(runs["many"])
    rows = [
        (f"plain onnxruntime loop, {THREADS.get(t, f'{t} threads')}", v, "reference" * (v == plain))
        for t, v in plains.items()
    ]
    rows += [
        ("service, 1 stream", single, f"{single / plain:.2f} x plain loop (target >= 0.8)"),
        (f"service, {args.streams} concurrent streams", many, f"{many / single:.2f} x 1 stream (target >= 3)"),
    ]
    if args.sse:
        sse_single, sse_many = statistics.median(runs["sse single"]), statistics.median(runs["sse many"])
        rows += [
            ("service over SSE, 1 stream", sse_single, f"{sse_single / single:.2f} x gRPC (target >= 0.9)"),
            (f"service over SSE, {args.streams} streams", sse_many, f"{sse_many / many:.2f} x gRPC (target >= 0.9)"),
        ]
    print(f"\n| {'setup':<40} | {'tokens/s':>9} | ratio |\n|{'-' * 42}|{'-' * 11}|-------|")
    for name, value, ratio in rows:
        print(f"| {name:<40} | {value:9.1f} | {ratio} |")


if __name__ == "__main__":
    main()
