"""myelin-eval generator: perplexity and bits per character of a served language model on its
validation split, through the service (Generator.Score), beside the manifest's figure.

    myelin-eval generator [--target HOST:PORT] [--model generator-gpt-shakespeare] --data-dir DIR
        [--text FILE] [--concurrency 16] [--limit N] [--json FILE]

The validation text is rebuilt from the dataset the manifest names (its checksum compared with the
manifest's, and cut to the manifest's count of validation tokens, as a dry run cuts it) and scored
as training measured it: in consecutive windows of the training block size, each token predicted
from the ones before it in its window. For a character model every character is one token, so the
windows are the training's own and the loss equals the manifest's `validation_loss` up to float32
rounding (PyTorch in training, onnxruntime's step graph here); it exits 1 when they differ by more
than 0.001. A BPE model's windows are cut on characters, so its figure is close to the manifest's,
not equal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from myelin_client import AsyncClient, Client, default_target
from myelin_training.data import text as text_data
from myelin_training.settings import TrainingSettings

TOLERANCE = 1e-3  # nats per token between the served loss and the manifest's (character models)


def windows(manifest: dict[str, Any], val_text: str) -> tuple[list[str], bool]:
    """The validation text in the training's windows (block_size + 1 tokens, overlapping by one), and
    whether they are exact (character tokenizer) or cut on characters (BPE)."""
    block = int(manifest["training"]["train_config"]["block_size"])
    tokens = int(manifest["training"]["validation_tokens"])
    if manifest["tokenizer"]["kind"] == "char":
        text = val_text[:tokens]
        return [text[i * block : (i + 1) * block + 1] for i in range((len(text) - 1) // block)], True
    # About block tokens' worth of characters, with room for windows denser than the average.
    size = max(2, int(0.8 * block * len(val_text) / max(tokens, 1)))
    return [val_text[i : i + size + 1] for i in range(0, len(val_text) - 1, size)], False


async def score_all(
    target: str, model: str, version: int, texts: list[str], concurrency: int
) -> list[tuple[int, list[float]]]:
    """(tokens, logprobs) of each text in order, `concurrency` requests in flight (the service batches them)."""
    results: list[tuple[int, list[float]]] = [(0, [])] * len(texts)
    queue = iter(range(len(texts)))

    async def worker(client: AsyncClient) -> None:
        for i in queue:
            scored = await client.score(texts[i], model=model, version=version, timeout=120)
            results[i] = (len(scored.token_ids), scored.logprobs)

    async with AsyncClient(target) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return results


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    with Client(args.target, timeout=60) as client:
        client.wait_ready()
        info = client.get_model(args.model)
    manifest = json.loads(info.manifest_json)
    dataset = manifest["dataset"]
    corpus = text_data.load_corpus(dataset["name"], args.data_dir, args.text)
    found = str(corpus.fingerprint()["sha256"])
    if found != dataset["sha256"]:
        raise SystemExit(
            f"the corpus found (sha256 {found[:12]}…) is not the one {args.model} was trained on "
            f"({dataset['sha256'][:12]}…): its validation split would not be the manifest's"
        )
    texts, exact = windows(manifest, corpus.val_text)
    texts = texts[: args.limit] if args.limit else texts
    started = time.perf_counter()
    scored = asyncio.run(score_all(args.target, args.model, info.version, texts, args.concurrency))
    seconds = time.perf_counter() - started
    nats = -sum(sum(logprobs) for _, logprobs in scored)
    predicted = sum(len(logprobs) for _, logprobs in scored)
    # characters predicted: every one but the first of each window (a character model); else the
    # window's characters in proportion to its predicted tokens
    characters = sum(len(t) * len(lp) / n for t, (n, lp) in zip(texts, scored, strict=True))
    loss = nats / predicted
    expected = float(manifest["evaluation"]["validation_loss"])
    return {
        "model": args.model,
        "version": info.version,
        "windows": len(texts),
        "tokens": predicted,
        "exact_windows": exact,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": nats / math.log(2) / characters,
        "manifest_loss": expected,
        "manifest_perplexity": math.exp(expected),
        "difference": loss - expected,
        "tokens_per_second": predicted / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin-eval generator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=default_target("generator"), help="HOST:PORT (default: %(default)s)")
    parser.add_argument("--model", default="generator-gpt-shakespeare")
    parser.add_argument("--data-dir", type=Path, default=TrainingSettings().data_dir)
    parser.add_argument("--text", type=Path, help="the file the model was trained on with --text")
    parser.add_argument("--concurrency", type=int, default=16, help="windows scored at once")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N windows (0: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.data_dir is None and args.text is None:
        parser.error("--data-dir is required (or set MYELIN_DATA_DIR)")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    r = evaluate(args)
    scope = "the whole validation split" if not args.limit else f"the first {r['windows']:,} windows"
    print(
        f"{r['model']} v{r['version']}: loss {r['loss']:.4f} nats/token, perplexity {r['perplexity']:.3f}, "
        f"{r['bits_per_character']:.4f} bits per character over {r['tokens']:,} tokens ({scope}; "
        f"{r['tokens_per_second']:,.0f} tokens/s)"
    )
    if not r["exact_windows"]:
        verdict = "windows cut on characters (a BPE model): close to, not the same as, the training's"
    elif args.limit:
        verdict = "part of the split: not comparable with it"
    elif abs(r["difference"]) <= TOLERANCE:
        verdict = f"the same within {TOLERANCE}"
    else:
        verdict = f"DIFFERENT by {r['difference']:+.4f}"
    print(
        f"manifest (PyTorch, at training): loss {r['manifest_loss']:.4f}, "
        f"perplexity {r['manifest_perplexity']:.3f}: {verdict}"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    if r["exact_windows"] and not args.limit and abs(r["difference"]) > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
