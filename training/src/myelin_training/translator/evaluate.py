"""myelin-eval translator: send the test split through a running translator service; BLEU and chrF.

    myelin-eval translator --target HOST:PORT --data-dir ../shared/data [--model translator-tatoeba]
        [--beam-size 1 --beam-size 4] [--limit N] [--json FILE]

The split is rebuilt from the dataset with the recipe recorded in the model's manifest (and the
dataset's checksum compared with the manifest's), so the test sentences are exactly those the model
never saw. Each distinct English sentence is translated once, by concurrent requests that the
service batches together; every test pair then counts as one line for sacreBLEU (BLEU with its
default 13a tokenisation, and chrF), the figure reported first. BLEU against all the references of
each English sentence at once (multi-reference) is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import sacrebleu

from myelin_client import AsyncClient, Client, default_target
from myelin_training.data.pairs import Pair, SplitRecipe, load_corpus, references_by_source
from myelin_training.settings import TrainingSettings


def held_out_pairs(manifest: dict[str, Any], data_dir: Path, split_name: str = "test") -> list[Pair]:
    dataset: dict[str, Any] = manifest["dataset"]
    split = dataset.get("split", {})
    recipe = None
    if dataset["corpus"] == "tatoeba":
        recipe = SplitRecipe(split["validation_fraction"], split["test_fraction"], split["salt"])
    corpus = load_corpus(dataset["corpus"], data_dir, recipe)
    found = str(corpus.fingerprint()["sha256"])
    if found != dataset["sha256"]:
        raise SystemExit(
            f"the dataset under {data_dir} (sha256 {found[:12]}…) is not the one the model was trained on "
            f"({dataset['sha256'][:12]}…): the test split would not be held out"
        )
    return corpus.splits[split_name]


async def translate_all(
    target: str,
    model: str,
    version: int,
    sentences: list[str],
    *,
    beam_size: int,
    batch: int,
    concurrency: int,
    length_penalty: float | None = None,
) -> tuple[list[str], float]:
    """Translations of `sentences` in order, sent as `concurrency` requests in flight at once."""
    out: list[str] = [""] * len(sentences)
    chunks = [range(i, min(i + batch, len(sentences))) for i in range(0, len(sentences), batch)]
    queue: asyncio.Queue[range] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def worker(client: AsyncClient) -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            result = await client.translate(
                [sentences[i] for i in chunk],
                model=model,
                version=version,
                beam_size=beam_size,
                length_penalty=length_penalty,
                timeout=600,
            )
            for i, translation in zip(chunk, result, strict=True):
                out[i] = translation.text

    started = time.perf_counter()
    async with AsyncClient(target, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return out, time.perf_counter() - started


def score(pairs: list[Pair], sentences: list[str], translated: list[str]) -> dict[str, float]:
    by_source = dict(zip(sentences, translated, strict=True))
    hypotheses = [by_source[p.source] for p in pairs]
    references = [p.target for p in pairs]
    _, multi = references_by_source(pairs)
    streams = [[refs[j] if j < len(refs) else None for refs in multi] for j in range(max(len(r) for r in multi))]
    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
        "bleu_multi_reference": round(sacrebleu.corpus_bleu(translated, streams).score, 2),  # type: ignore[arg-type]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin-eval translator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=default_target("translator"), help="HOST:PORT (default: %(default)s)")
    parser.add_argument("--model", default="translator-tatoeba")
    parser.add_argument("--version", type=int, default=0, help="0: the newest ready version")
    parser.add_argument("--data-dir", type=Path, default=TrainingSettings().data_dir)
    parser.add_argument(
        "--beam-size", type=int, action="append", help="repeatable; default: 1 (greedy) and 4, to compare"
    )
    parser.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="validation: for tuning, e.g. the length penalty",
    )
    parser.add_argument("--length-penalty", type=float, help="alpha (default: the service's, 0.6)")
    parser.add_argument("--batch", type=int, default=32, help="sentences per request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--limit", type=int, default=0, help="only the first N test pairs (0: all)")
    parser.add_argument("--examples", type=int, default=5, help="example translations to print")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("--data-dir is required (or set MYELIN_DATA_DIR)")
    with Client(args.target, timeout=60) as client:
        client.wait_ready()
        info = client.get_model(args.model, version=args.version)
    manifest = json.loads(info.manifest_json)
    pairs = held_out_pairs(manifest, args.data_dir, args.split)
    if args.limit:
        pairs = pairs[: args.limit]
    sentences, references = references_by_source(pairs)
    print(f"{args.model} v{info.version}: {len(pairs)} {args.split} pairs, {len(sentences)} distinct English sentences")
    reports = []
    for beam in args.beam_size or [1, 4]:
        translated, seconds = asyncio.run(
            translate_all(
                args.target,
                args.model,
                info.version,
                sentences,
                beam_size=beam,
                batch=args.batch,
                concurrency=args.concurrency,
                length_penalty=args.length_penalty,
            )
        )
        figures = score(pairs, sentences, translated)
        report = {
            "model": args.model,
            "version": info.version,
            "split": args.split,
            "beam_size": beam,
            "length_penalty": args.length_penalty,
            "pairs": len(pairs),
            "sentences": len(sentences),
            **figures,
            "seconds": round(seconds, 1),
            "sentences_per_second": round(len(sentences) / seconds, 1),
        }
        reports.append(report)
        print(
            f"beam {beam}: BLEU {figures['bleu']:.2f}, chrF {figures['chrf']:.2f} "
            f"(multi-reference BLEU {figures['bleu_multi_reference']:.2f}) in {seconds:.0f} s "
            f"({report['sentences_per_second']} sentences/s)"
        )
        step = max(1, len(sentences) // max(args.examples, 1))
        for i in range(0, len(sentences), step)[: args.examples]:
            print(f"  {sentences[i]}\n    -> {translated[i]}\n    reference: {' | '.join(references[i])}")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    if not reports or any(r["sentences"] == 0 for r in reports):
        sys.exit(1)
