"""Myelin's word2vec against gensim 4 on the same corpus, with the same hyperparameters, in one run.

    .venv/bin/python benchmarks/word2vec_vs_gensim/run.py [--data-dir ../shared/data] [--seeds 1 2]
        [--archs skipgram cbow] [--epochs 5] [--threads 2]

1. The corpus: the `english` preset (WikiText-2 valid+test, Tiny Shakespeare, Tatoeba's English
   column, Multi30k English, the Lee corpus; ~1.9M words) tokenised once by Myelin's tokeniser
   into `.bench/word2vec/corpus.txt`, one sentence per line, which both tools read.
2. gensim runs in its own virtualenv (`.bench/gensim-venv`, created here from requirements.txt),
   in a separate process, so it never shares an interpreter with torch.
3. Per architecture and seed: gensim, then `myelin-train word2vec` on the same file; both with
   dim 100, window 5, negative 5, sample 1e-3, min-count 5, the same epochs, alpha (0.025
   skip-gram, 0.05 CBOW, decaying linearly to alpha * 1e-4) and threads (gensim's workers).
4. Both tools' vectors (word2vec text format) are scored by the same code (NumpyScorer):
   analogy accuracy (3CosAdd, 30,000 most frequent words), WordSim-353 and SimLex-999 Spearman.
   Words/s is corpus words x epochs / training seconds (vocabulary building excluded) for both;
   words/CPU-s divides by the CPU seconds the training used instead (all threads or worker
   processes), which other load on a shared machine distorts less.

Run it under the machine-wide lock: `flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/...`.
Prints one table and writes `.bench/word2vec/results.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import numpy as np

from myelin_training.data import corpus
from myelin_training.word2vec import evaluate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = ROOT / ".bench" / "word2vec"
GENSIM_VENV = ROOT / ".bench" / "gensim-venv"
ALPHA = {"skipgram": 0.025, "cbow": 0.05}
FIGURES = ("analogy_accuracy", "wordsim353_spearman", "simlex999_spearman", "words_per_second", "words_per_cpu_second")


def gensim_python() -> Path:
    python = GENSIM_VENV / "bin" / "python"
    stamp = GENSIM_VENV / ".installed"
    requirements = HERE / "requirements.txt"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        print(f"creating {GENSIM_VENV} (gensim's own environment)", flush=True)
        venv.create(GENSIM_VENV, with_pip=True, clear=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements], check=True
        )
        stamp.write_text(requirements.read_text())
    return python


def write_corpus(data_dir: Path, path: Path) -> int:
    words = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for sentence in corpus.sentences(corpus.preset("english", data_dir)):
            f.write(" ".join(sentence) + "\n")
            words += len(sentence)
    return words


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8") as f:
        rows, dim = (int(x) for x in f.readline().split())
        words, vectors = [], np.empty((rows, dim), dtype=np.float32)
        for i, line in enumerate(f):
            word, *values = line.rstrip("\n").split(" ")
            words.append(word)
            vectors[i] = np.asarray(values, dtype=np.float32)
    return words, vectors


def score(vectors_file: Path, paths: dict[str, Path]) -> dict[str, Any]:
    words, vectors = read_vectors(vectors_file)
    return evaluate.headline(evaluate.evaluate_all(paths, words, evaluate.NumpyScorer(vectors)))


def run_gensim(python: Path, corpus_file: Path, out: Path, arch: str, args: argparse.Namespace, seed: int) -> dict:
    command = [
        python, HERE / "gensim_train.py", corpus_file, out, "--sg", "1" if arch == "skipgram" else "0",
        "--dim", "100", "--window", "5", "--negative", "5", "--sample", "1e-3", "--min-count", "5",
        "--epochs", str(args.epochs), "--alpha", str(ALPHA[arch]), "--workers", str(args.threads), "--seed", str(seed),
    ]  # fmt: skip
    subprocess.run([str(c) for c in command], check=True)
    return json.loads((out / "timing.json").read_text())


def run_myelin(corpus_file: Path, out: Path, arch: str, args: argparse.Namespace, seed: int) -> tuple[dict, Path]:
    repository = out / "repository"
    command = [
        Path(sys.executable).parent / "myelin-train", "word2vec", "--corpus", corpus_file, "--repository", repository,
        "--run-dir", out / "run", "--name", f"word2vec-bench-{arch}", "--arch", arch, "--dim", "100",
        "--window", "5", "--negative", "5", "--sample", "1e-3", "--min-count", "5", "--epochs", str(args.epochs),
        "--alpha", str(ALPHA[arch]), "--threads", str(args.threads), "--seed", str(seed), "--no-eval",
    ]  # fmt: skip
    subprocess.run([str(c) for c in command], check=True, env={**os.environ, "TQDM_MININTERVAL": "5"})
    model_dir = repository / f"word2vec-bench-{arch}"
    version = max(model_dir.iterdir(), key=lambda p: int(p.name))
    manifest = json.loads((version / "model.json").read_text())
    return manifest["training"], version / "vectors.txt"


def speed(timing: dict[str, Any], epochs: int) -> dict[str, float]:
    words = timing["corpus_words"] * epochs
    return {"words_per_second": words / timing["train_seconds"], "words_per_cpu_second": words / timing["cpu_seconds"]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| arch | tool | seeds | analogy acc | WS353 rho | SimLex rho | words/s | words/CPU-s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["tool"] == "myelin / gensim":
            figures = " | ".join(f"**{row[k]:.3f}**" for k in FIGURES)
        else:
            figures = " | ".join([f"{row[k]:.4f}" for k in FIGURES[:3]] + [f"{row[k]:,.0f}" for k in FIGURES[3:]])
        lines.append(f"| {row['arch']} | {row['tool']} | {row['seeds']} | {figures} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("MYELIN_DATA_DIR", ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--archs", nargs="+", default=["skipgram", "cbow"], choices=["skipgram", "cbow"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    paths = evaluate.eval_paths(args.data_dir)
    corpus_file = WORK / "corpus.txt"
    words = write_corpus(args.data_dir, corpus_file)
    print(f"corpus: {words:,} words -> {corpus_file}", flush=True)
    python = gensim_python()
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:  # every architecture per seed, so a cut-short run still compares both
        for arch in args.archs:
            out = WORK / f"{arch}-seed{seed}"
            timing = run_gensim(python, corpus_file, out / "gensim", arch, args, seed)
            runs.append(
                {"arch": arch, "tool": "gensim", "seed": seed, **score(out / "gensim" / "vectors.txt", paths),
                 **speed(timing, args.epochs)}
            )  # fmt: skip
            print(f"gensim {arch} seed {seed}: {runs[-1]}", flush=True)
            training, vectors = run_myelin(corpus_file, out / "myelin", arch, args, seed)
            runs.append(
                {"arch": arch, "tool": "myelin", "seed": seed, **score(vectors, paths), **speed(training, args.epochs)}
            )
            print(f"myelin {arch} seed {seed}: {runs[-1]}", flush=True)
    rows: list[dict[str, Any]] = []
    for arch in args.archs:
        means = {}
        for tool in ("gensim", "myelin"):
            mine = [r for r in runs if r["arch"] == arch and r["tool"] == tool]
            means[tool] = {k: statistics.fmean(r[k] for r in mine) for k in FIGURES}
            rows.append({"arch": arch, "tool": tool, "seeds": len(mine), **means[tool]})
        rows.append({"arch": arch, "tool": "myelin / gensim", "seeds": len(args.seeds),
                     **{k: means["myelin"][k] / means["gensim"][k] for k in FIGURES}})  # fmt: skip
    text = table(rows)
    print("\n" + text)
    (WORK / "results.json").write_text(
        json.dumps({"runs": runs, "summary": rows, "epochs": args.epochs}, indent=2) + "\n"
    )
    (WORK / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
