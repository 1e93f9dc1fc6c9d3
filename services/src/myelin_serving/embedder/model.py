"""A loaded word2vec version and the query logic (embed, neighbours, analogies...): no gRPC here.

Two graphs do the numeric work on onnxruntime, each behind its dynamic batcher: `lookup` (word
ids -> unit vectors) and `neighbours` (queries, ids to exclude, a frequency-rank limit -> top-K
cosine scores and ids). Queries are combined here in numpy exactly as the offline evaluation
combines them (`(b + c) - a` for an analogy), so served answers equal the evaluation's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from myelin_serving.batching import DynamicBatcher
from myelin_serving.embedder.vocabulary import Vocabulary, words_of
from myelin_serving.errors import InvalidArgument
from myelin_serving.repository import LoadContext, LoadedModel, ModelVersion
from myelin_serving.runtime import OnnxGraph

LOOKUP, NEIGHBOURS = "lookup", "neighbours"
DEFAULT_TOP_K = 10
EXCLUDE_ALIGN = 8  # exclude widths are padded to a multiple of this, so requests share batches
MAX_EXCLUDE = 1024  # ids one KServe neighbours row may exclude (the export's bound on that axis)


@dataclass(frozen=True)
class Neighbour:
    word: str
    index: int
    score: float


@dataclass(frozen=True)
class WordVector:
    word: str
    index: int  # -1: unknown
    values: np.ndarray | None  # (d,) float32 unit vector, None when unknown


@dataclass(frozen=True)
class TextVector:
    values: np.ndarray  # (d,) float32 unit vector: the normalised mean of the text's known words
    words: int  # words in the text, known or not
    unknown_words: list[str]  # distinct, in order of appearance


@dataclass(frozen=True)
class AnalogyAnswer:
    candidates: list[Neighbour]
    unknown_words: list[str]


@dataclass(frozen=True)
class PairSimilarity:
    similarity: float | None  # None when a word is unknown
    unknown_words: list[str]


class EmbedderModel(LoadedModel):
    def __init__(
        self,
        version: ModelVersion,
        graphs: dict[str, OnnxGraph],
        batchers: dict[str, DynamicBatcher],
        vocabulary: Vocabulary,
        dim: int,
        max_top_k: int,
    ) -> None:
        super().__init__(version, graphs, batchers)
        self.vocabulary = vocabulary
        self.dim = dim
        self.max_top_k = max_top_k

    # Building blocks.

    async def unit(self, ids: np.ndarray, timeout: float | None) -> np.ndarray:
        """(N,) ids -> (N, d) unit vectors."""
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = await self.batchers[LOOKUP].infer({"ids": ids.astype(np.int64)}, timeout=timeout)
        return out["vectors"]

    async def nearest(
        self, queries: np.ndarray, exclude: list[list[int]], limit: int, top_k: int, timeout: float | None
    ) -> list[list[Neighbour]]:
        """The top_k words nearest each (N, d) query among ids below `limit`, skipping `exclude`."""
        width = max(1, max((len(e) for e in exclude), default=1))
        width = -(-width // EXCLUDE_ALIGN) * EXCLUDE_ALIGN
        padded = np.full((len(queries), width), -1, dtype=np.int64)
        for row, ids in enumerate(exclude):
            padded[row, : len(ids)] = ids
        feeds: dict[str, np.ndarray] = {
            "queries": np.ascontiguousarray(queries, dtype=np.float32),
            "exclude": padded,
            "limit": np.full(len(queries), limit, dtype=np.int64),
        }
        out = await self.batchers[NEIGHBOURS].infer(feeds, timeout=timeout)
        words = self.vocabulary.words
        results = []
        for scores, indices in zip(out["scores"], out["indices"], strict=True):
            keep = np.isfinite(scores)[:top_k]
            results.append(
                [
                    Neighbour(words[int(i)], int(i), float(s))
                    for s, i in zip(scores[:top_k][keep], indices[:top_k][keep], strict=True)
                ]
            )
        return results

    def check_top_k(self, top_k: int, default: int) -> int:
        k = top_k or default
        if not 1 <= k <= self.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.max_top_k} for this model, got {top_k}")
        return k

    def check_limit(self, restrict_vocab: int) -> int:
        if restrict_vocab < 0:
            raise InvalidArgument(f"restrict_vocab must be 0 (whole vocabulary) or positive, got {restrict_vocab}")
        return min(restrict_vocab or len(self.vocabulary), len(self.vocabulary))

    def check_vector(self, values: Sequence[float], field: str) -> np.ndarray:
        vector = np.asarray(values, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise InvalidArgument(f"{field} has {vector.size} values; this model's vectors have {self.dim}")
        if not np.isfinite(vector).all():
            raise InvalidArgument(f"{field} has NaN or infinite values")
        # In float64: float32 squares overflow for values past ~1e19 and vanish below ~1e-23.
        wide = vector.astype(np.float64)
        norm = float(np.linalg.norm(wide))
        if norm == 0.0 or not np.isfinite(norm):
            raise InvalidArgument(f"{field} is all zeros: it has no direction")
        return (wide / norm).astype(np.float32)

    def check_count(self, items: Sequence[object], field: str, max_items: int) -> None:
        if not items:
            raise InvalidArgument(f"{field} is empty: send at least one")
        if len(items) > max_items:
            raise InvalidArgument(f"{len(items)} {field} in one request; the limit is {max_items}: split the request")

    def known_ids(self, words: Sequence[str], field: str) -> list[int]:
        ids = [self.vocabulary.id(w) for w in words]
        unknown = [w for w, i in zip(words, ids, strict=True) if i < 0]
        if unknown:
            listed = ", ".join(repr(w[:50]) for w in unknown[:10])
            raise InvalidArgument(
                f"{field}: unknown word(s) {listed}: not in the {len(self.vocabulary)}-word vocabulary of {self.name}"
            )
        return ids

    # The queries.

    async def embed(self, words: Sequence[str], *, max_items: int, timeout: float | None) -> list[WordVector]:
        self.check_count(words, "words", max_items)
        ids = np.array([self.vocabulary.id(w) for w in words], dtype=np.int64)
        found = ids >= 0
        vectors = await self.unit(ids[found], timeout)
        rows = iter(vectors)
        return [WordVector(w, int(i), next(rows) if ok else None) for w, i, ok in zip(words, ids, found, strict=True)]

    async def embed_texts(self, texts: Sequence[str], *, max_items: int, timeout: float | None) -> list[TextVector]:
        """One vector per text: the mean of its words' unit vectors (every occurrence of every known
        word; words as training split them), scaled to length 1. Unknown words are reported; a text
        with no known word at all is refused."""
        self.check_count(texts, "inputs", max_items)
        split = [words_of(text) for text in texts]
        distinct = list(dict.fromkeys(word for words in split for word in words))
        if len(distinct) > max_items:
            raise InvalidArgument(
                f"{len(distinct)} distinct words in one request; the limit is {max_items}: split the request"
            )
        ids = {word: self.vocabulary.id(word) for word in distinct}
        known = [word for word in distinct if ids[word] >= 0]
        units = await self.unit(np.array([ids[word] for word in known], dtype=np.int64), timeout)
        rows = dict(zip(known, units, strict=True))
        vectors = []
        for index, words in enumerate(split):
            found = [rows[word] for word in words if word in rows]
            unknown = list(dict.fromkeys(word for word in words if word not in rows))
            if not found:
                listed = ", ".join(repr(w[:50]) for w in unknown[:10]) or "no words at all"
                raise InvalidArgument(
                    f"input[{index}] has no word in the {len(self.vocabulary)}-word vocabulary of {self.name}: {listed}"
                )
            mean = np.mean(np.asarray(found, dtype=np.float64), axis=0)
            norm = float(np.linalg.norm(mean))
            if norm == 0.0:
                raise InvalidArgument(f"input[{index}]: its words' vectors cancel out: the mean has no direction")
            vectors.append(TextVector((mean / norm).astype(np.float32), len(words), unknown))
        return vectors

    async def most_similar(
        self,
        positive: Sequence[str],
        negative: Sequence[str],
        positive_vectors: Sequence[Sequence[float]],
        negative_vectors: Sequence[Sequence[float]],
        *,
        top_k: int,
        restrict_vocab: int,
        max_items: int,
        timeout: float | None,
    ) -> list[Neighbour]:
        terms = len(positive) + len(negative) + len(positive_vectors) + len(negative_vectors)
        if terms == 0:
            raise InvalidArgument("give at least one positive or negative word or vector")
        if terms > max_items:
            raise InvalidArgument(f"{terms} words and vectors in one query; the limit is {max_items}")
        k, limit = self.check_top_k(top_k, DEFAULT_TOP_K), self.check_limit(restrict_vocab)
        pos_vectors = [self.check_vector(v, f"positive_vectors[{i}]") for i, v in enumerate(positive_vectors)]
        neg_vectors = [self.check_vector(v, f"negative_vectors[{i}]") for i, v in enumerate(negative_vectors)]
        pos_ids = self.known_ids(positive, "positive")
        neg_ids = self.known_ids(negative, "negative")
        units = await self.unit(np.array(pos_ids + neg_ids, dtype=np.int64), timeout)
        plus = [*units[: len(pos_ids)], *pos_vectors]
        minus = [*units[len(pos_ids) :], *neg_vectors]
        query = np.zeros(self.dim, dtype=np.float32)
        for v in plus:
            query = query + v
        for v in minus:
            query = query - v
        if not np.any(query):
            raise InvalidArgument("the positive and negative terms cancel out: the query has no direction")
        (neighbours,) = await self.nearest(query[None, :], [pos_ids + neg_ids], limit, k, timeout)
        return neighbours

    async def analogy(
        self,
        questions: Sequence[tuple[str, str, str]],
        *,
        top_k: int,
        restrict_vocab: int,
        max_items: int,
        timeout: float | None,
    ) -> list[AnalogyAnswer]:
        """a : b :: c : ? for each question: nearest to (b + c) - a over unit vectors, a, b, c excluded."""
        self.check_count(questions, "questions", max_items)
        k, limit = self.check_top_k(top_k, 1), self.check_limit(restrict_vocab)
        ids = np.array([[self.vocabulary.id(w) for w in q] for q in questions], dtype=np.int64)  # (N, 3)
        known = np.all(ids >= 0, axis=1)
        answers: list[AnalogyAnswer | None] = [
            None if ok else AnalogyAnswer([], [w for w, i in zip(q, row, strict=True) if i < 0])
            for q, row, ok in zip(questions, ids, list(known), strict=True)
        ]
        asked = ids[known]
        if len(asked):
            units = (await self.unit(asked.reshape(-1), timeout)).reshape(len(asked), 3, self.dim)
            queries = (units[:, 1] + units[:, 2]) - units[:, 0]
            found = await self.nearest(queries, asked.tolist(), limit, k, timeout)
            rows = iter(found)
            answers = [a if a is not None else AnalogyAnswer(next(rows), []) for a in answers]
        return [a for a in answers if a is not None]

    async def similarity(
        self, pairs: Sequence[tuple[str, str]], *, max_items: int, timeout: float | None
    ) -> list[PairSimilarity]:
        self.check_count(pairs, "pairs", max_items)
        ids = np.array([[self.vocabulary.id(w) for w in pair] for pair in pairs], dtype=np.int64)  # (N, 2)
        known = np.all(ids >= 0, axis=1)
        units = (await self.unit(ids[known].reshape(-1), timeout)).reshape(-1, 2, self.dim)
        cosines = iter((units[:, 0] * units[:, 1]).sum(axis=1).tolist())
        return [
            PairSimilarity(next(cosines), [])
            if ok
            else PairSimilarity(None, [w for w, i in zip(pair, row, strict=True) if i < 0])
            for pair, row, ok in zip(pairs, ids, list(known), strict=True)
        ]

    async def doesnt_match(
        self, words: Sequence[str], *, max_items: int, timeout: float | None
    ) -> tuple[str, list[float]]:
        if len(words) < 2:
            raise InvalidArgument(f"doesnt_match needs at least two words, got {len(words)}")
        self.check_count(words, "words", max_items)
        units = await self.unit(np.array(self.known_ids(words, "words"), dtype=np.int64), timeout)
        mean = units.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        similarities = units @ mean
        return words[int(np.argmin(similarities))], similarities.tolist()


async def load(version: ModelVersion, context: LoadContext) -> EmbedderModel:
    embedding = version.manifest.model_extra.get("embedding", {}) if version.manifest.model_extra else {}
    vocabulary = Vocabulary.read(version.path, embedding.get("vocab_file", "vocab.tsv"))
    graphs = {name: await context.open_graph(version, name) for name in (LOOKUP, NEIGHBOURS)}
    lookup, neighbours = graphs[LOOKUP], graphs[NEIGHBOURS]
    if [i.name for i in lookup.inputs] != ["ids"] or len(lookup.outputs[0].shape) != 2:
        raise ValueError(f"{version.name}: the lookup graph must take `ids` (B,) and return (B, d) vectors")
    if [i.name for i in neighbours.inputs] != ["queries", "exclude", "limit"]:
        raise ValueError(f"{version.name}: the neighbours graph must take queries, exclude and limit")
    dim = int(lookup.outputs[0].shape[1])
    declared = int(embedding.get("vocab_size", len(vocabulary)))
    if declared != len(vocabulary):
        raise ValueError(f"{version.name}: vocab file has {len(vocabulary)} words, the manifest says {declared}")
    max_top_k = int(embedding.get("max_top_k", 0) or neighbours.outputs[0].shape[-1])
    if max_top_k < 1:
        raise ValueError(f"{version.name}: cannot tell the neighbours graph's K (set embedding.max_top_k)")
    batchers = {name: context.batcher(version, graph) for name, graph in graphs.items()}
    model = EmbedderModel(version, graphs, batchers, vocabulary, dim, max_top_k)
    # What a KServe caller may feed each graph: ids in the vocabulary (-1 pads `exclude`).
    words = len(vocabulary)
    model.input_limits[LOOKUP] = context.graph_limits(version, values={"ids": (0, words - 1)})
    model.input_limits[NEIGHBOURS] = context.graph_limits(
        version, axes={"exclude": (1, MAX_EXCLUDE)}, values={"exclude": (-1, words - 1), "limit": (0, words)}
    )
    # Warm-up at one row and at a full batch, before the version is marked ready.
    rows = context.batching_for(version).max_batch_size
    for n in sorted({1, rows}):
        units = await asyncio.to_thread(lookup.run, {"ids": np.zeros(n, dtype=np.int64)})
        feeds = {
            "queries": units["vectors"],
            "exclude": np.full((n, EXCLUDE_ALIGN), -1, dtype=np.int64),
            "limit": np.full(n, len(vocabulary), dtype=np.int64),
        }
        await asyncio.to_thread(neighbours.run, feeds)
    return model
