"""Word-vector evaluation: analogies (3CosAdd) and word-similarity correlation (Spearman).

Analogies (questions-words.txt, `a b c d` per line, 14 sections headed `: name`, the first five
semantic): the answer to a : b :: c : ? is the word x maximising cos(x, b) - cos(x, a) + cos(x, c)
over the `restrict` most frequent words, a, b and c excluded, i.e. gensim's
`most_similar(positive=[b, c], negative=[a])`. As is customary (word2vec.c's compute-accuracy,
gensim's evaluate_word_analogies) the vocabulary is restricted to the 30,000 most frequent words,
and questions with a word outside it are skipped and counted. Words are lowercased.

Similarity (WordSim-353, SimLex-999): Spearman's rank correlation between the human scores and
the cosine similarities, over the pairs whose words are both known (the rest are counted).

Answers come from a `Scorer`: `NumpyScorer` over a matrix of vectors (any tool's), or
`OnnxScorer` over an exported version's two graphs, which is the exact computation the embedder
service runs, so its answers can be compared one for one with the service's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from myelin_training.data.files import find_file

RESTRICT = 30_000
SEMANTIC_SECTIONS = 5
ANALOGY_FILE = "wordvec-eval/questions-words.txt"
SIMILARITY_FILES = {"wordsim353": "wordvec-eval/wordsim353.tsv", "simlex999": "wordvec-eval/simlex999.txt"}


@dataclass
class AnalogySection:
    name: str
    questions: list[tuple[str, str, str, str]] = field(default_factory=list)


def load_analogies(path: Path) -> list[AnalogySection]:
    sections: list[AnalogySection] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            sections.append(AnalogySection(line[1:].strip()))
        elif line.strip():
            a, b, c, d = line.lower().split()
            if not sections:
                sections.append(AnalogySection("questions"))
            sections[-1].questions.append((a, b, c, d))
    return sections


def load_similarity(path: Path) -> list[tuple[str, str, float]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        first, second, score = line.split("\t")[:3]
        pairs.append((first.lower(), second.lower(), float(score)))
    return pairs


def eval_paths(data_dir: Path) -> dict[str, Path]:
    """The three evaluation files under `data_dir` (or `data_dir/..` layouts); one error if one is missing."""
    paths = {"analogy": find_file("analogy questions", data_dir, [ANALOGY_FILE, Path(ANALOGY_FILE).name])}
    for name, rel in SIMILARITY_FILES.items():
        paths[name] = find_file(name, data_dir, [rel, Path(rel).name])
    return paths


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks, ties sharing their mean rank."""
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    # Ties: every member of a group of equal values gets the group's mean rank.
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(unique))
    sizes = np.bincount(inverse, minlength=len(unique))
    return (sums / sizes)[inverse]


class Scorer(Protocol):
    def unit(self, ids: np.ndarray) -> np.ndarray:
        """(N,) word ids -> (N, d) L2-normalised vectors."""
        ...

    def nearest(self, queries: np.ndarray, exclude: np.ndarray, limit: int) -> np.ndarray:
        """(N, d) queries, (N, E) ids to skip -> (N,) id of the most cosine-similar word below `limit`."""
        ...


class NumpyScorer:
    def __init__(self, vectors: np.ndarray) -> None:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def unit(self, ids: np.ndarray) -> np.ndarray:
        return self.vectors[ids]

    def nearest(self, queries: np.ndarray, exclude: np.ndarray, limit: int) -> np.ndarray:
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        scores = q @ self.vectors[:limit].T  # (N, limit)
        for column in exclude.T:
            rows = np.flatnonzero((column >= 0) & (column < limit))
            scores[rows, column[rows]] = -np.inf
        return scores.argmax(axis=1)


class OnnxScorer:
    """An exported version's `lookup` and `neighbours` graphs on onnxruntime (CPU)."""

    def __init__(self, version_dir: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self.lookup = ort.InferenceSession(
            str(version_dir / "lookup.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.neighbours = ort.InferenceSession(
            str(version_dir / "neighbours.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def unit(self, ids: np.ndarray) -> np.ndarray:
        return self.lookup.run(["vectors"], {"ids": ids.astype(np.int64)})[0]

    def nearest(self, queries: np.ndarray, exclude: np.ndarray, limit: int) -> np.ndarray:
        feeds = {
            "queries": queries.astype(np.float32),
            "exclude": exclude.astype(np.int64),
            "limit": np.full(len(queries), limit, dtype=np.int64),
        }
        return self.neighbours.run(["indices"], feeds)[0][:, 0]


def analogy_query(unit_a: np.ndarray, unit_b: np.ndarray, unit_c: np.ndarray) -> np.ndarray:
    """b - a + c over unit vectors, in the one order the service also uses: (b + c) - a."""
    return (unit_b + unit_c) - unit_a


def analogies(
    sections: list[AnalogySection],
    words: Sequence[str],
    scorer: Scorer,
    *,
    restrict: int = RESTRICT,
    batch: int = 512,
) -> dict[str, Any]:
    """Accuracy per section, semantic, syntactic and total; skipped (out-of-vocabulary) questions counted."""
    index = {w: i for i, w in enumerate(words[:restrict])}
    limit = min(restrict, len(words))
    report: dict[str, Any] = {"sections": {}, "restrict_vocab": limit}
    totals = {"semantic": [0, 0, 0], "syntactic": [0, 0, 0]}  # correct, answered, skipped
    answers: list[str] = []
    for number, section in enumerate(sections):
        known = [q for q in section.questions if all(w in index for w in q)]
        ids = np.array([[index[w] for w in q] for q in known], dtype=np.int64).reshape(-1, 4)
        predicted = answer_ids(scorer, ids[:, :3], limit, batch=batch)
        correct = int((predicted == ids[:, 3]).sum())
        answers += [words[i] for i in predicted]
        skipped = len(section.questions) - len(known)
        report["sections"][section.name] = {
            "accuracy": correct / len(known) if known else None,
            "correct": correct,
            "answered": len(known),
            "skipped": skipped,
        }
        tally = totals["semantic" if number < SEMANTIC_SECTIONS else "syntactic"]
        tally[0] += correct
        tally[1] += len(known)
        tally[2] += skipped
    for kind, (correct, answered, skipped) in totals.items():
        report[kind] = {"accuracy": correct / answered if answered else None, "answered": answered, "skipped": skipped}
    correct = sum(t[0] for t in totals.values())
    answered = sum(t[1] for t in totals.values())
    report["total"] = {
        "accuracy": correct / answered if answered else None,
        "correct": correct,
        "answered": answered,
        "skipped": sum(t[2] for t in totals.values()),
    }
    report["answers_sha256"] = answers_digest(answers)
    return report


def answer_ids(scorer: Scorer, questions: np.ndarray, limit: int, *, batch: int = 512) -> np.ndarray:
    """(N, 3) ids of a, b, c -> (N,) id of the 3CosAdd answer among the first `limit` words."""
    out = np.empty(len(questions), dtype=np.int64)
    for i in range(0, len(questions), batch):
        q = questions[i : i + batch]
        a, b, c = (scorer.unit(q[:, j]) for j in range(3))
        out[i : i + batch] = scorer.nearest(analogy_query(a, b, c), q, limit)
    return out


def answers_digest(answers: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(answers).encode()).hexdigest()


def similarity(pairs: list[tuple[str, str, float]], words: Sequence[str], scorer: Scorer) -> dict[str, Any]:
    index = {w: i for i, w in enumerate(words)}
    known = [(a, b, s) for a, b, s in pairs if a in index and b in index]
    if not known:
        return {"spearman": None, "pairs": 0, "skipped": len(pairs)}
    first = scorer.unit(np.array([index[a] for a, _, _ in known]))
    second = scorer.unit(np.array([index[b] for _, b, _ in known]))
    cosines = (first * second).sum(axis=1)
    return {
        "spearman": spearman([s for _, _, s in known], cosines.tolist()),
        "pairs": len(known),
        "skipped": len(pairs) - len(known),
    }


def evaluate_all(
    paths: dict[str, Path], words: Sequence[str], scorer: Scorer, *, restrict: int = RESTRICT
) -> dict[str, Any]:
    report: dict[str, Any] = {"analogy": analogies(load_analogies(paths["analogy"]), words, scorer, restrict=restrict)}
    for name in SIMILARITY_FILES:
        report[name] = similarity(load_similarity(paths[name]), words, scorer)
    return report


def headline(report: dict[str, Any]) -> dict[str, float | None]:
    """The few figures the manifest's `evaluation` map and the benchmark table carry."""
    analogy = report["analogy"]
    return {
        "analogy_accuracy": analogy["total"]["accuracy"],
        "analogy_semantic_accuracy": analogy["semantic"]["accuracy"],
        "analogy_syntactic_accuracy": analogy["syntactic"]["accuracy"],
        "analogy_answered": analogy["total"]["answered"],
        "analogy_skipped": analogy["total"]["skipped"],
        "wordsim353_spearman": report["wordsim353"]["spearman"],
        "simlex999_spearman": report["simlex999"]["spearman"],
    }
