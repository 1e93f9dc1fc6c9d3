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
3. aggregate tokens/s of 8 concurrent streams through the service; target >= 3 x (2).
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
from tokenizers import Tokenizer

from myelin_client import AsyncClient, Client

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


async def many_streams(target: str, model: str, prompt: str, tokens: int, temperature: float, n: int) -> float:
    async with AsyncClient(target, timeout=300) as client:

        async def one(seed: int) -> int:
            async with client.generate(
                prompt, model=model, max_new_tokens=tokens, temperature=temperature, seed=seed
            ) as stream:
                return sum([len(chunk.token_ids) async for chunk in stream])

        await client.wait_ready()
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    assert counts == [tokens] * n, counts
    return n * tokens / elapsed


def start_service(
    repository: Path, tmp: Path, threads: int, *, family: str = "generator"
) -> tuple[subprocess.Popen[bytes], str]:
    """`myelin-serve FAMILY` on a free loopback port, ready; its address. (The translator benchmark uses it too.)"""
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
            "--metrics-port",
            "-1",
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
                target = f"127.0.0.1:{json.loads(port_file.read_text())['port']}"
                break
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.1)
        with Client(target) as client:
            client.wait_ready(timeout=120)
    except BaseException:
        process.kill()  # never leave the service behind
        process.wait()
        raise
    return process, target


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
        process, target = start_service(args.repository, Path(tmp), args.threads)
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
                rate = asyncio.run(
                    many_streams(target, args.model, args.prompt, args.tokens, args.temperature, args.streams)
                )
                runs.setdefault("many", []).append(rate)
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
    print(f"\n| {'setup':<40} | {'tokens/s':>9} | ratio |\n|{'-' * 42}|{'-' * 11}|-------|")
    for name, value, ratio in rows:
        print(f"| {name:<40} | {value:9.1f} | {ratio} |")


if __name__ == "__main__":
    main()
