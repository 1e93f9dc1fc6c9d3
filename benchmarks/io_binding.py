"""IO binding on the CPU provider: what the bound path (OrtValues, IOBinding, array-operation graphs)
costs against numpy arrays, through the services' own classes, in this process, no gRPC.

    flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/io_binding.py --repository model_repository

Prints ms per decoding step of the generator's KVCacheBatch (1 and 8 rows, 150 steps after a
6-token prompt), ms per step of the translator's ActiveBatch (8 sentences, beam 4, until every
search ends) and ms per classifier batch (mnist-cnn, 32 images, `OnnxGraph.run`), with
`io_binding` off (numpy, the CPU default) and on, one intra-op thread. Rounds alternate the two;
figures are medians over --rounds with their range, and the ratio on/off is taken per round.
On a GPU the bound path is the one that keeps caches on the device (scripts/gpu_check.py measures
the services there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from myelin_serving.generator.cache import KVCacheBatch
from myelin_serving.runtime import OnnxGraph, RuntimeOptions
from myelin_serving.translator.batch import ActiveBatch, Job
from myelin_serving.translator.model import OnnxStepGraphs
from myelin_serving.translator.search import BeamSearch, SearchOptions


def latest(repository: Path, model: str) -> Path:
    return max((p for p in (repository / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def generator_ms(version: Path, options: RuntimeOptions, rows: int) -> float:
    decoder = json.loads((version / "model.json").read_text())["decoder"]
    batch = KVCacheBatch(
        OnnxGraph(version / "step.onnx", options),
        inputs=decoder["cache_inputs"],
        outputs=decoder["cache_outputs"],
        slot_axes=[decoder["slot_axis"][n.rsplit(".", 1)[1]] for n in decoder["cache_inputs"]],
        heads=decoder["cache_shape"]["heads"],
        head_dim=decoder["cache_shape"]["head_dim"],
    )
    rng = np.random.default_rng(0)
    _, prefilled = batch.prefill([[1, 2, 3, 4, 5, 6]] * rows)
    batch.join(prefilled)
    for _ in range(10):
        batch.step(rng.integers(0, 50, rows))
    started, steps = time.perf_counter(), 150
    for _ in range(steps):
        batch.step(rng.integers(0, 50, rows))
    return (time.perf_counter() - started) / steps * 1000


def translator_ms(version: Path, options: RuntimeOptions, sentences: int) -> float:
    decoding = json.loads((version / "model.json").read_text())["decoding"]
    encoder, decoder = (OnnxGraph(version / f"{n}.onnx", options) for n in ("encoder", "decoder"))
    graphs = OnnxStepGraphs(encoder, decoder, model="bench", version=1, metrics=None)
    dims = [int(decoding[k]) for k in ("num_layers", "num_heads", "head_dim")]
    seconds, steps = 0.0, 0
    for seed in range(3):
        batch = ActiveBatch(*dims, bos_id=1, tensors=graphs.tensors)
        rng = np.random.default_rng(seed)
        ids = np.array([[*rng.integers(4, 60, 9), 2] for _ in range(sentences)], dtype=np.int64)
        jobs = [Job(row, BeamSearch(SearchOptions(4, 40, 0.0), eos_id=2, banned=(0, 1))) for row in ids]
        batch.join(jobs, *graphs.encode(ids, ids != 0), ids != 0)
        started = time.perf_counter()
        while len(batch):
            batch.advance(*graphs.decode(batch.feeds()))
            steps += 1
        seconds += time.perf_counter() - started
    return seconds / steps * 1000


def classifier_ms(version: Path, options: RuntimeOptions, images: int) -> float:
    graph = OnnxGraph(version / "model.onnx", options)
    feeds = {graph.inputs[0].name: np.random.default_rng(0).random((images, 28, 28), dtype=np.float32)}
    for _ in range(10):
        graph.run(feeds)
    started, calls = time.perf_counter(), 200
    for _ in range(calls):
        graph.run(feeds)
    return (time.perf_counter() - started) / calls * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    repo = args.repository
    cases: dict[str, Callable[[RuntimeOptions], float]] = {
        "generator step, 1 row": lambda o: generator_ms(latest(repo, "generator-gpt-shakespeare"), o, 1),
        "generator step, 8 rows": lambda o: generator_ms(latest(repo, "generator-gpt-shakespeare"), o, 8),
        "translator step, 8 sentences x beam 4": lambda o: translator_ms(latest(repo, "translator-tatoeba"), o, 8),
        "classifier batch, 32 images": lambda o: classifier_ms(latest(repo, "mnist-cnn"), o, 32),
    }
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, case in cases.items():
            for binding in ("off", "on"):
                runs.setdefault((name, binding), []).append(case(RuntimeOptions("cpu", 1, io_binding=binding)))
    print(f"\n| {'case':<38} | off ms | on ms | on / off (range) |\n|{'-' * 40}|--------|-------|------------------|")
    for name in cases:
        off, on = runs[(name, "off")], runs[(name, "on")]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        print(
            f"| {name:<38} | {statistics.median(off):6.3f} | {statistics.median(on):5.3f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )


if __name__ == "__main__":
    main()
