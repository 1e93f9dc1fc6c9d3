"""Export a trained word2vec model into `<repository>/word2vec-<name>/<version>/`.

- `lookup.onnx`: `ids` (B,) int64 -> `vectors` (B, d) float32, L2-normalised rows;
- `neighbours.onnx`: `queries` (B, d) float32 (any length: normalised inside), `exclude` (B, E)
  int64 ids to skip (-1 pads), `limit` (B,) int64 (only ids below it are candidates: the most
  frequent words) -> `scores` (B, K) cosine similarities and `indices` (B, K) int64, best first.
  K is fixed at export (min(vocabulary, MAX_TOP_K)); candidates that were excluded score -inf;
- `vocab.tsv` (`word<TAB>count`, most frequent first: a word's line number is its id);
- `vectors.txt`: the input vectors (not normalised) in word2vec's text format, `V d` then one
  `word v1 ... vd` line per word, which gensim's KeyedVectors.load_word2vec_format reads;
- `model.json`: config, corpus checksum, evaluation figures (computed with the exported graphs,
  the computation the service runs) and export parity.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from myelin_training import export
from myelin_training.data import corpus
from myelin_training.word2vec import evaluate
from myelin_training.word2vec.model import Word2Vec, Word2VecConfig
from myelin_training.word2vec.vocab import Vocabulary

MAX_TOP_K = 1000
MAX_EXPORT_BATCH = 4096


class Lookup(nn.Module):
    """ids (B,) -> unit vectors (B, d)."""

    unit: torch.Tensor

    def __init__(self, unit: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("unit", unit)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.unit[ids]


class Neighbours(nn.Module):
    """queries (B, d), exclude (B, E), limit (B,) -> top-K cosine scores and ids (B, K)."""

    unit: torch.Tensor

    def __init__(self, unit: torch.Tensor, k: int) -> None:
        super().__init__()
        self.register_buffer("unit", unit)
        self.k = k

    def forward(
        self, queries: torch.Tensor, exclude: torch.Tensor, limit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v = int(self.unit.shape[0])
        q = queries / torch.linalg.vector_norm(queries, dim=1, keepdim=True).clamp_min(1e-12)
        scores = q @ self.unit.T  # (B, V)
        columns = torch.arange(v, device=queries.device)
        scores = torch.where(columns.unsqueeze(0) < limit.unsqueeze(1), scores, float("-inf"))
        # Excluded ids get -inf; padding (-1, or anything out of range) lands in an extra column.
        padded = torch.cat([scores, torch.full_like(scores[:, :1], float("-inf"))], dim=1)  # (B, V + 1)
        target = torch.where((exclude >= 0) & (exclude < v), exclude, torch.full_like(exclude, v))
        padded = padded.scatter(1, target, float("-inf"))
        values, indices = torch.topk(padded[:, :v], self.k, dim=1)
        return values, indices


def unit_vectors(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True).clamp_min(1e-12)


def write_vectors(path: Path, words: list[str], vectors: np.ndarray) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors, strict=True):
            f.write(word + " " + " ".join(f"{x:.9g}" for x in row.tolist()) + "\n")  # float32 round-trips


def graph_specs(unit: torch.Tensor, k: int) -> dict[str, export.GraphExport]:
    v, d = unit.shape
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)

    def lookup_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        n = int(torch.randint(1, 50, (1,), generator=g))
        return (torch.randint(0, v, (n,), generator=g),)

    def neighbour_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        n = int(torch.randint(1, 40, (1,), generator=g))
        e = int(torch.randint(1, 9, (1,), generator=g))
        # Real words' vectors plus noise, so the top-k has a clear order to compare.
        queries = unit[torch.randint(0, v, (n,), generator=g)] + 0.1 * torch.randn(n, d, generator=g)
        exclude = torch.randint(-1, v, (n, e), generator=g)
        limit = torch.randint(k, v + 1, (n,), generator=g)
        return queries, exclude, limit

    return {
        "lookup": export.GraphExport(
            module=Lookup(unit),
            example_inputs=(torch.arange(min(3, v)),),
            input_names=["ids"],
            output_names=["vectors"],
            dynamic_shapes=({0: batch},),
            parity_inputs=lookup_inputs,
            atol=0.0,
            rtol=0.0,
        ),
        "neighbours": export.GraphExport(
            module=Neighbours(unit, k),
            example_inputs=(unit[:2].clone(), torch.full((2, 3), -1, dtype=torch.int64), torch.full((2,), v)),
            input_names=["queries", "exclude", "limit"],
            output_names=["scores", "indices"],
            dynamic_shapes=({0: batch}, {0: batch, 1: torch.export.Dim("exclude", min=1, max=1024)}, {0: batch}),
            parity_inputs=neighbour_inputs,
            atol=1e-5,
            rtol=1e-4,
            # Indices may swap between near-equal scores; `check_indices` checks them against the scores.
            compared_outputs=("scores",),
        ),
    }


def check_indices(path: Path, unit: torch.Tensor, spec: export.GraphExport, seed: int) -> None:
    """The ids the graph returns must have the cosine similarities it returns with them."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(spec.parity_trials):
        queries, exclude, limit = spec.parity_inputs(generator)
        feeds = {"queries": queries.numpy(), "exclude": exclude.numpy(), "limit": limit.numpy()}
        scores, indices = session.run(["scores", "indices"], feeds)
        finite = np.isfinite(scores)
        q = unit_vectors(queries).numpy()
        cosines = np.einsum("bd,bkd->bk", q, unit.numpy()[indices])
        if not np.allclose(cosines[finite], scores[finite], atol=1e-5):
            raise export.ExportParityError(f"{path.name}: returned indices do not have the returned scores")
        if np.any(indices[finite] >= limit.numpy()[:, None].repeat(indices.shape[1], 1)[finite]):
            raise export.ExportParityError(f"{path.name}: an index at or beyond `limit` was returned")
        excluded = (indices[:, :, None] == exclude.numpy()[:, None, :]).any(axis=2)
        if np.any(excluded & finite):
            raise export.ExportParityError(f"{path.name}: an excluded id was returned")


def export_model(
    model: Word2Vec,
    vocab: Vocabulary,
    config: Word2VecConfig,
    *,
    args: argparse.Namespace,
    files: list[corpus.CorpusFile],
    eval_paths: dict[str, Path] | None,
    training: dict[str, Any],
    side_files: list[Path],
) -> Path:
    vectors = model.input.weight.detach()[: len(vocab)].float()  # drop the padding row
    unit = unit_vectors(vectors).contiguous()
    k = min(len(vocab), MAX_TOP_K)
    staged = export.staging_dir(args.repository, args.name)
    try:
        graphs: dict[str, Any] = {}
        for name, spec in graph_specs(unit, k).items():
            path = staged / f"{name}.onnx"
            parity, signature = export.export_graph(spec, path, seed=args.seed)
            if name == "neighbours":
                check_indices(path, unit, spec, args.seed)
            graphs[name] = export.graph_entry(path, signature, parity)
        vocab.save(staged / "vocab.tsv")
        write_vectors(staged / "vectors.txt", vocab.words, vectors.numpy())
        for path in side_files:
            shutil.copy2(path, staged / path.name)
        evaluation: dict[str, Any] = {}
        details: dict[str, Any] = {}
        if eval_paths is not None:
            details = evaluate.evaluate_all(eval_paths, vocab.words, evaluate.OnnxScorer(staged))
            evaluation = {k: v for k, v in evaluate.headline(details).items() if v is not None}
            evaluation["analogy_answers_sha256"] = details["analogy"]["answers_sha256"]
        manifest: dict[str, Any] = {
            "family": "embedder",
            "architecture": config.arch,
            "graphs": graphs,
            "embedding": {
                "dim": config.dim,
                "vocab_size": len(vocab),
                "max_top_k": k,
                "vocab_file": "vocab.tsv",
                "vectors_file": "vectors.txt",
                "lowercase": True,
                "normalized": True,
            },
            "training": {"model_config": dataclasses.asdict(config), **training},
            "dataset": {"name": "corpus", **corpus.fingerprint(files)},
            "evaluation": evaluation,
            "evaluation_details": details,
            "export": export.export_info(),
            "files": {"metrics": "metrics.jsonl", "curves": "curves.png"},
        }
        return export.publish_version(args.repository, args.name, staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
