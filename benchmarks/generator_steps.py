"""Generator decoding steps without gRPC: what one step of B rows costs, graph alone and with sampling.

    flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/generator_steps.py \
        --repository model_repository --model generator-gpt-shakespeare

Prints, for B = 1 and 8 rows:
1. ms per call of the step graph alone, with `--slots` filled cache slots (16 spare), on one intra-op
   thread, on 2 sleeping threads and on 2 spinning threads (the service's default);
2. ms per step of the service's own decoding code in this process (`KVCacheBatch` on 2 spinning
   threads, 200 steps after `ROMEO:`): the graph, then + `sample_rows`, then + streaming text;
   the 8-row / 1-row ratio of the last bounds what 8 streams can gain over one.
Rounds alternate the settings; figures are medians over --rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from myelin_serving.generator.cache import KVCacheBatch
from myelin_serving.generator.sampling import Sampler, SamplingParams, sample_rows
from myelin_serving.generator.text import IncrementalDecoder, StopMatcher, TextCodec
from myelin_serving.runtime import OnnxGraph, RuntimeOptions

SESSIONS = {"1 thread": (1, False), "2 threads, sleeping": (2, False), "2 threads, spinning": (2, True)}


def graph_ms(graph: OnnxGraph, decoder: dict, rows: int, slots: int, calls: int = 300) -> float:
    shape = decoder["cache_shape"]
    h, d, s = shape["heads"], shape["head_dim"], slots + 16
    rng = np.random.default_rng(0)
    feeds = {"input_ids": np.zeros((rows, 1), np.int64), "padding": np.zeros(rows, np.int64)}
    feeds["length"] = np.array(slots, np.int64)
    for name in decoder["cache_inputs"]:
        dims = (rows, h, d, s) if decoder["slot_axis"][name.rsplit(".", 1)[1]] == 3 else (rows, h, s, d)
        feeds[name] = rng.standard_normal(dims).astype(np.float32)
    for _ in range(20):
        graph.run(feeds)
    started = time.perf_counter()
    for _ in range(calls):
        graph.run(feeds)
    return (time.perf_counter() - started) / calls * 1e3


def decode_ms(graph: OnnxGraph, decoder: dict, codec: TextCodec, rows: int, stage: int, steps: int = 200) -> float:
    """ms per step: stage 0 the graph and cache writes, 1 + sampling, 2 + streaming text."""
    batch = KVCacheBatch(
        graph,
        inputs=decoder["cache_inputs"],
        outputs=decoder["cache_outputs"],
        slot_axes=[decoder["slot_axis"][n.rsplit(".", 1)[1]] for n in decoder["cache_inputs"]],
        heads=decoder["cache_shape"]["heads"],
        head_dim=decoder["cache_shape"]["head_dim"],
    )
    prompt = codec.encode_prompt("ROMEO:")
    banned = [] if codec.unk_id is None else [codec.unk_id]
    _, prefilled = batch.prefill([prompt] * rows)
    batch.join(prefilled)
    samplers = [Sampler(SamplingParams(temperature=0.8, seed=i), codec.vocab_size, prompt, banned) for i in range(rows)]
    texts = [(IncrementalDecoder(codec), StopMatcher([])) for _ in range(rows)]
    tokens = np.zeros(rows, np.int64)
    started = time.perf_counter()
    for _ in range(steps):
        logits = batch.step(tokens)
        if stage >= 1:
            tokens = np.array(sample_rows(samplers, logits))
        if stage >= 2:
            for (decoder_, matcher), token in zip(texts, tokens, strict=True):
                matcher.feed(decoder_.add(int(token)))
    return (time.perf_counter() - started) / steps * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="generator-gpt-shakespeare")
    parser.add_argument("--slots", type=int, default=100, help="filled cache slots for the graph alone")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    versions = sorted(int(p.name) for p in (args.repository / args.model).iterdir() if p.name.isdigit())
    version_dir = args.repository / args.model / str(versions[-1])
    manifest = json.loads((version_dir / "model.json").read_text())
    decoder = manifest["decoder"]
    if decoder["cache"] != "kv":
        raise SystemExit(f"{args.model}: this benchmark is for KV-cache (GPT) models")
    codec = TextCodec(
        version_dir / "tokenizer.json",
        unk_id=manifest["tokenizer"]["unk_id"],
        start_text=manifest["tokenizer"]["start_text"],
    )
    graphs = {
        name: OnnxGraph(version_dir / "step.onnx", RuntimeOptions("cpu", threads, spinning))
        for name, (threads, spinning) in SESSIONS.items()
    }
    alone: dict[tuple[str, int], list[float]] = {}
    steps: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.rounds):
        for rows in (1, 8):
            for name, graph in graphs.items():
                alone.setdefault((name, rows), []).append(graph_ms(graph, decoder, rows, args.slots))
            for stage in (0, 1, 2):
                steps.setdefault((rows, stage), []).append(
                    decode_ms(graphs["2 threads, spinning"], decoder, codec, rows, stage)
                )
    print(f"{args.model} v{manifest['version']}, median of {args.rounds} rounds\n")
    print(f"graph alone, {args.slots} filled slots (ms per call):")
    for name in SESSIONS:
        one, eight = (statistics.median(alone[(name, rows)]) for rows in (1, 8))
        print(f"  {name:<20}  1 row {one:6.3f}   8 rows {eight:6.3f}   ({eight / one:.2f} x)")
    print("\nthe service's decoding code in-process, 2 spinning threads, 200 steps (ms per step):")
    for stage, name in enumerate(("graph + cache writes", "+ sampling", "+ streaming text")):
        one, eight = (statistics.median(steps[(rows, stage)]) for rows in (1, 8))
        gain = 8 * one / eight
        print(
            f"  {name:<20}  1 row {one:6.3f}   8 rows {eight:6.3f}   ({eight / one:.2f} x; 8 rows: {gain:.2f} x tokens)"
        )


if __name__ == "__main__":
    main()
