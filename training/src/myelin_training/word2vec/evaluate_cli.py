"""myelin-eval word2vec: analogy and word-similarity figures, offline or through a running service.

    myelin-eval word2vec --model-dir REPO/word2vec-skipgram/1          # the exported graphs, offline
    myelin-eval word2vec --vectors vectors.txt                          # any word2vec text file
    myelin-eval word2vec --target HOST:PORT --model word2vec-skipgram [--model-dir ...]

With --target every in-vocabulary analogy question goes through the service's Analogy call
(restricted to the 30,000 most frequent words, as offline) and its answers are compared one for
one with the offline evaluation's: those of --model-dir when given, else the SHA-256 of the
answers recorded in the served version's manifest. Exit status 1 when they differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from myelin_client import Client
from myelin_training.settings import TrainingSettings
from myelin_training.word2vec import evaluate

BATCH = 256


def read_vocab(version_dir: Path) -> list[str]:
    return [line.split("\t", 1)[0] for line in (version_dir / "vocab.tsv").read_text(encoding="utf-8").splitlines()]


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8") as f:
        rows, dim = (int(x) for x in f.readline().split())
        words, vectors = [], np.empty((rows, dim), dtype=np.float32)
        for i, line in enumerate(f):
            word, *values = line.rstrip("\n").split(" ")
            words.append(word)
            vectors[i] = np.asarray(values, dtype=np.float32)
    return words, vectors


def served_analogies(
    client: Client, model: str, sections: list[evaluate.AnalogySection], restrict: int
) -> dict[str, Any]:
    """Every question whose four words are among the `restrict` most frequent, through the service."""
    words = sorted({w for s in sections for q in s.questions for w in q})
    ranks = {
        v.word: v.index for i in range(0, len(words), BATCH) for v in client.embed(words[i : i + BATCH], model=model)
    }
    info = client.get_model(model)
    limit = min(restrict, int(json.loads(info.manifest_json)["embedding"]["vocab_size"]))
    questions = [q for s in sections for q in s.questions if all(0 <= ranks[w] < limit for w in q)]
    answers: list[str] = []
    for i in range(0, len(questions), BATCH):
        chunk = questions[i : i + BATCH]
        result = client.analogies(
            [(a, b, c) for a, b, c, _ in chunk], model=model, version=info.version, restrict_vocab=limit, timeout=120
        )
        answers += [a.word or "" for a in result]
    correct = sum(answer == q[3] for answer, q in zip(answers, questions, strict=True))
    return {
        "model": model,
        "version": info.version,
        "questions": questions,
        "answers": answers,
        "accuracy": correct / len(questions) if questions else None,
        "answers_sha256": evaluate.answers_digest(answers),
        "manifest_answers_sha256": json.loads(info.manifest_json).get("evaluation", {}).get("analogy_answers_sha256"),
    }


def print_report(title: str, report: dict[str, Any]) -> None:
    analogy = report["analogy"]
    print(f"{title}: analogies over the {analogy['restrict_vocab']:,} most frequent words")
    for name, s in analogy["sections"].items():
        shown = f"{s['accuracy']:.2%}" if s["accuracy"] is not None else "-"
        print(f"  {name:<30} {shown:>8}  ({s['correct']}/{s['answered']}, {s['skipped']} skipped)")
    for kind in ("semantic", "syntactic", "total"):
        t = analogy[kind]
        shown = f"{t['accuracy']:.2%}" if t["accuracy"] is not None else "-"
        print(f"  {kind:<30} {shown:>8}  ({t['answered']} answered, {t['skipped']} skipped)")
    for name in evaluate.SIMILARITY_FILES:
        r = report[name]
        rho = f"{r['spearman']:.4f}" if r["spearman"] is not None else "-"
        print(f"  {name:<30} Spearman {rho} over {r['pairs']} pairs ({r['skipped']} skipped)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin-eval word2vec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="an exported version folder (evaluated with its ONNX graphs)")
    parser.add_argument("--vectors", type=Path, help="a word2vec text-format file, most frequent words first")
    parser.add_argument("--target", help="HOST:PORT of an embedder service to check against")
    parser.add_argument("--model", default="word2vec-skipgram", help="the served model (with --target)")
    parser.add_argument("--data-dir", type=Path, default=TrainingSettings().data_dir)
    parser.add_argument("--restrict", type=int, default=evaluate.RESTRICT, help="analogy vocabulary (most frequent)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("--data-dir is required (or set MYELIN_DATA_DIR)")
    if not (args.model_dir or args.vectors or args.target):
        parser.error("give --model-dir, --vectors or --target")
    paths = evaluate.eval_paths(args.data_dir)
    output: dict[str, Any] = {}
    offline_answers: list[str] | None = None
    if args.model_dir or args.vectors:
        if args.model_dir:
            words, scorer = read_vocab(args.model_dir), evaluate.OnnxScorer(args.model_dir)
        else:
            words, vectors = read_vectors(args.vectors)
            scorer = evaluate.NumpyScorer(vectors)  # type: ignore[assignment]
        report = evaluate.evaluate_all(paths, words, scorer, restrict=args.restrict)
        print_report(str(args.model_dir or args.vectors), report)
        output["offline"] = report
        index = {w: i for i, w in enumerate(words[: args.restrict])}
        questions = [q for s in evaluate.load_analogies(paths["analogy"]) for q in s.questions]
        known = [q for q in questions if all(w in index for w in q)]
        ids = np.array([[index[w] for w in q[:3]] for q in known], dtype=np.int64).reshape(-1, 3)
        offline_answers = [words[i] for i in evaluate.answer_ids(scorer, ids, min(args.restrict, len(words)))]
    same = True
    if args.target:
        with Client(args.target, timeout=60) as client:
            client.wait_ready()
            served = served_analogies(client, args.model, evaluate.load_analogies(paths["analogy"]), args.restrict)
        answers = served.pop("answers")
        served.pop("questions")
        if offline_answers is not None:
            equal = sum(a == b for a, b in zip(answers, offline_answers, strict=False))
            same = len(answers) == len(offline_answers) == equal
            served["equal_to_offline"] = equal
            versus = (
                f"{equal}/{len(answers)} answers equal to the offline evaluation's ({len(offline_answers)} offline)"
            )
        else:
            same = served["answers_sha256"] == served["manifest_answers_sha256"]
            versus = "same answers as the manifest's" if same else "ANSWERS DIFFER from the manifest's"
        print(
            f"{served['model']} v{served['version']} served: analogy accuracy "
            f"{served['accuracy']:.2%} over {len(answers)} questions; {versus}"
        )
        output["served"] = served
    if args.json:
        args.json.write_text(json.dumps(output, indent=2, default=str) + "\n")
    if not same:
        sys.exit(1)
