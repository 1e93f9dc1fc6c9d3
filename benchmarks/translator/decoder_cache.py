"""Cached decoder steps vs re-running the decoder on the whole prefix, per generated token.

    .venv/bin/python benchmarks/translator/decoder_cache.py --repository model_repository \
        [--model translator-tatoeba] [--batch 1 --batch 4 --batch 8 --batch 32] [--length 16 --length 32 --length 64]

Both ways use the same exported decoder.onnx through the service's onnxruntime wrapper:
  cached    step t feeds one token (T = 1) and the key/value cache of the t tokens before (P = t)
  uncached  step t feeds the whole prefix (T = t + 1) with an empty cache (P = 0), as a decoder
            without a cache must; only the last position's log-probabilities are computed either way
Generating N tokens takes N calls each way. The table gives milliseconds per generated token
(per sequence step, all rows of the batch together) and the speed-up; the encoder runs once,
outside the timings. Timings are medians over --repeats runs. Batch 1 is one sentence decoded
greedily, batch 4 one sentence under the service's default beam of 4, larger batches several
sentences decoded together (the service steps every sentence in flight at once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from myelin_serving.runtime import OnnxGraph, RuntimeOptions


def latest_version(repository: Path, model: str) -> Path:
    versions = sorted((p for p in (repository / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise SystemExit(f"no version of {model} in {repository}: train one with `myelin-train translator`")
    return versions[-1]


def generate(
    decoder: OnnxGraph, cross: tuple[np.ndarray, np.ndarray], mask: np.ndarray, length: int, *, cached: bool
) -> float:
    """Seconds to produce `length` tokens for every row, feeding back a fixed token sequence."""
    keys, values = cross
    b, layers, heads, _, head_dim = keys.shape
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, decoder.outputs[0].shape[-1], (b, length), dtype=np.int64)
    tokens[:, 0] = 1  # BOS
    empty = np.zeros((b, layers, heads, 0, head_dim), dtype=np.float32)
    past_keys, past_values = empty, empty
    started = time.perf_counter()
    for t in range(length):
        if cached:
            feeds = {
                "input_ids": tokens[:, t : t + 1],
                "position_ids": np.full((b, 1), t, dtype=np.int64),
                "past_keys": past_keys,
                "past_values": past_values,
                "past_mask": np.ones((b, t), dtype=bool),
            }
        else:
            feeds = {
                "input_ids": np.ascontiguousarray(tokens[:, : t + 1]),
                "position_ids": np.broadcast_to(np.arange(t + 1, dtype=np.int64), (b, t + 1)).copy(),
                "past_keys": empty,
                "past_values": empty,
                "past_mask": np.zeros((b, 0), dtype=bool),
            }
        out = decoder.run({**feeds, "cross_keys": keys, "cross_values": values, "source_mask": mask})
        if cached:
            past_keys, past_values = out["present_keys"], out["present_values"]
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="translator-tatoeba")
    parser.add_argument("--batch", type=int, action="append", help="rows per step (default 1, 4, 8, 32)")
    parser.add_argument("--length", type=int, action="append", help="tokens generated (default 16, 32, 64)")
    parser.add_argument("--source-length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    version = latest_version(args.repository, args.model)
    options = RuntimeOptions(device="cpu", intra_op_threads=args.threads)
    encoder = OnnxGraph(version / "encoder.onnx", options)
    decoder = OnnxGraph(version / "decoder.onnx", options)
    vocab = decoder.outputs[0].shape[-1]  # log_probs (B, V)
    print(f"{args.model} v{version.name}: decoder step with vs without its key/value cache (onnxruntime, CPU)")
    print(f"{'batch':>5} {'tokens':>6} {'cached ms/token':>16} {'uncached ms/token':>18} {'speed-up':>9}")
    rows = []
    for b in args.batch or [1, 4, 8, 32]:
        source = np.random.default_rng(1).integers(4, vocab, (b, args.source_length), dtype=np.int64)
        mask = np.ones_like(source, dtype=bool)
        cross = encoder.run({"source_ids": source, "source_mask": mask}, ["cross_keys", "cross_values"])
        pair = (cross["cross_keys"], cross["cross_values"])
        for n in args.length or [16, 32, 64]:
            generate(decoder, pair, mask, 4, cached=True)  # warm-up for these shapes
            cached = statistics.median(generate(decoder, pair, mask, n, cached=True) for _ in range(args.repeats))
            uncached = statistics.median(generate(decoder, pair, mask, n, cached=False) for _ in range(args.repeats))
            row = {
                "batch": b,
                "tokens": n,
                "cached_ms_per_token": 1000 * cached / n,
                "uncached_ms_per_token": 1000 * uncached / n,
                "speedup": uncached / cached,
            }
            rows.append(row)
            print(
                f"{b:>5} {n:>6} {row['cached_ms_per_token']:>16.3f} {row['uncached_ms_per_token']:>18.3f} "
                f"{row['speedup']:>8.1f}x"
            )
    short = [r for r in rows if r["speedup"] < 3]
    print(
        f"cached >= 3x faster per token in {len(rows) - len(short)} of {len(rows)} rows"
        + (": below it at " + ", ".join(f"batch {r['batch']}/{r['tokens']} tokens" for r in short) if short else "")
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
