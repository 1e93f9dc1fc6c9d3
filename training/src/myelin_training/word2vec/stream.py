"""The corpus as word ids on disk, read back in chunks: text is tokenised once, not once per epoch.

`encode` streams the corpus (never holding it in memory) into `<run_dir>/corpus.ids` (int32 ids of
in-vocabulary words, out-of-vocabulary words dropped as word2vec.c drops them) and
`corpus.starts` (int64 offset of each sentence). `chunks` memory-maps them and yields pieces of
about `size` tokens cut at sentence boundaries, with each token's sentence number.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from myelin_training.word2vec.vocab import Vocabulary

FLUSH_TOKENS = 1 << 20


@dataclass(frozen=True)
class EncodedCorpus:
    ids_path: Path
    starts_path: Path
    tokens: int  # in-vocabulary tokens
    sentences: int

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.memmap(self.ids_path, dtype=np.int32, mode="r") if self.tokens else np.zeros(0, np.int32)
        starts = np.fromfile(self.starts_path, dtype=np.int64)
        return ids, starts


@dataclass(frozen=True)
class Chunk:
    start: int  # offset of the first token in the encoded corpus
    ids: np.ndarray  # (N,) int32
    sentence: np.ndarray  # (N,) int64 sentence number of each token


def encode(sentences: Iterable[list[str]], vocab: Vocabulary, folder: Path) -> EncodedCorpus:
    folder.mkdir(parents=True, exist_ok=True)
    ids_path, starts_path = folder / "corpus.ids", folder / "corpus.starts"
    tokens = count = pending_tokens = 0
    pending: list[np.ndarray] = []
    starts: list[int] = []
    with ids_path.open("wb") as ids_file, starts_path.open("wb") as starts_file:
        for sentence in sentences:
            ids = vocab.encode(sentence)
            if len(ids) == 0:
                continue
            starts.append(tokens)
            pending.append(ids)
            tokens += len(ids)
            pending_tokens += len(ids)
            count += 1
            if pending_tokens >= FLUSH_TOKENS:
                np.concatenate(pending).tofile(ids_file)
                np.array(starts, dtype=np.int64).tofile(starts_file)
                pending, starts, pending_tokens = [], [], 0
        if pending:
            np.concatenate(pending).tofile(ids_file)
        np.array(starts, dtype=np.int64).tofile(starts_file)
    return EncodedCorpus(ids_path, starts_path, tokens, count)


def chunk_bounds(starts: np.ndarray, tokens: int, size: int) -> list[tuple[int, int]]:
    """[begin, end) token ranges of about `size` tokens, each starting at a sentence start."""
    bounds: list[tuple[int, int]] = []
    begin = 0
    while begin < tokens:
        i = int(np.searchsorted(starts, begin + size, side="left"))
        end = int(starts[i]) if i < len(starts) else tokens
        if end <= begin:
            end = tokens if i + 1 >= len(starts) else int(starts[i + 1])
        bounds.append((begin, end))
        begin = end
    return bounds


def read_chunk(ids: np.ndarray, starts: np.ndarray, begin: int, end: int) -> Chunk:
    chunk_ids = np.asarray(ids[begin:end])
    sentence = np.searchsorted(starts, np.arange(begin, end), side="right") - 1
    return Chunk(begin, chunk_ids, sentence)


def chunks(corpus: EncodedCorpus, size: int) -> Iterator[Chunk]:
    ids, starts = corpus.load()
    for begin, end in chunk_bounds(starts, corpus.tokens, size):
        yield read_chunk(ids, starts, begin, end)
