"""The vocabulary and the word statistics training draws from, as in word2vec.c.

- words with at least `min_count` occurrences, most frequent first (ties: first seen first), so a
  word's id is its frequency rank and "the first 30,000 words" are the most frequent ones;
- the keep probability of subsampling: (sqrt(f / (t N)) + 1) (t N) / f for a word seen f times in
  N corpus words (threshold t): rare words are always kept, frequent ones often dropped;
- the negative-sampling table: word ids in proportion to count ** 0.75;
- the Huffman tree of hierarchical softmax: per word its code (the left/right turns) and points
  (inner nodes), frequent words getting short codes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NEGATIVE_POWER = 0.75
# word2vec.c's table has 1e8 entries; random reads from one that large miss the cache on every
# draw. 100 entries per word (at least 1e6) keeps each word's share within 1e-6 of count ** 0.75.
TABLE_PER_WORD, TABLE_MIN, TABLE_MAX = 100, 1_000_000, 100_000_000


@dataclass
class Vocabulary:
    words: list[str]  # most frequent first
    counts: np.ndarray  # (V,) int64
    corpus_words: int  # every token of the corpus, in the vocabulary or not
    sentences: int

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @property
    def train_words(self) -> int:
        """Tokens training sees per epoch before subsampling (corpus words in the vocabulary)."""
        return int(self.counts.sum())

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_count: int, max_size: int = 0) -> Vocabulary:
        counter: Counter[str] = Counter()
        total = lines = 0
        for sentence in sentences:
            counter.update(sentence)
            total += len(sentence)
            lines += 1
        # Counter keeps first-seen order, and sorted() is stable: ties stay in corpus order.
        kept = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: -wc[1])
        if max_size:
            kept = kept[:max_size]
        if not kept:
            raise ValueError(
                f"no word occurs at least {min_count} times in the corpus ({total} words): lower --min-count"
            )
        words = [w for w, _ in kept]
        return cls(words, np.array([c for _, c in kept], dtype=np.int64), total, lines)

    def encode(self, sentence: list[str]) -> np.ndarray:
        """Word ids of a sentence; words outside the vocabulary are dropped (as word2vec.c does)."""
        index = self.index
        return np.fromiter((i for i in map(index.get, sentence) if i is not None), dtype=np.int32)

    def keep_probabilities(self, sample: float) -> np.ndarray:
        """(V,) float32 probability that one occurrence of each word survives subsampling."""
        if sample <= 0:
            return np.ones(len(self), dtype=np.float32)
        threshold = sample * self.train_words
        f = self.counts.astype(np.float64)
        return np.minimum((np.sqrt(f / threshold) + 1) * threshold / f, 1.0).astype(np.float32)

    def negative_table(self, size: int = 0) -> np.ndarray:
        """(size,) word ids (int16 when they fit: half the cache misses), each word filling a share
        of count ** 0.75 of the table."""
        size = size or min(max(TABLE_PER_WORD * len(self), TABLE_MIN), TABLE_MAX)
        weights = self.counts.astype(np.float64) ** NEGATIVE_POWER
        bounds = np.round(np.cumsum(weights) / weights.sum() * size).astype(np.int64)
        dtype = np.int16 if len(self) <= np.iinfo(np.int16).max else np.int32
        return np.repeat(np.arange(len(self), dtype=dtype), np.diff(bounds, prepend=0))

    def save(self, path: Path) -> None:
        """One `word<TAB>count` line per word, most frequent first."""
        with path.open("w", encoding="utf-8") as f:
            for word, count in zip(self.words, self.counts.tolist(), strict=True):
                f.write(f"{word}\t{count}\n")


@dataclass(frozen=True)
class HuffmanTree:
    """Per word: its code bits and the inner nodes on its path, padded to `max_depth`."""

    codes: np.ndarray  # (V, max_depth) float32, 0/1
    points: np.ndarray  # (V, max_depth) int64, inner node ids in [0, V-1)
    lengths: np.ndarray  # (V,) int64

    @classmethod
    def build(cls, counts: np.ndarray) -> HuffmanTree:
        """word2vec.c's construction: two pointers over the sorted counts, O(V)."""
        v = len(counts)
        if v < 2:
            raise ValueError("hierarchical softmax needs at least two words in the vocabulary")
        count = np.concatenate([counts.astype(np.int64), np.full(v, np.iinfo(np.int64).max // 4, dtype=np.int64)])
        parent = np.zeros(2 * v, dtype=np.int64)
        binary = np.zeros(2 * v, dtype=np.int8)
        pos1, pos2 = v - 1, v
        for a in range(v - 1):
            picks = []
            for _ in range(2):
                if pos1 >= 0 and count[pos1] < count[pos2]:
                    picks.append(pos1)
                    pos1 -= 1
                else:
                    picks.append(pos2)
                    pos2 += 1
            count[v + a] = count[picks[0]] + count[picks[1]]
            parent[picks[0]] = parent[picks[1]] = v + a
            binary[picks[1]] = 1
        root = 2 * v - 2
        paths_codes, paths_points = [], []
        for word in range(v):
            code, point, node = [], [], word
            while node != root:
                code.append(int(binary[node]))
                node = int(parent[node])
                point.append(node - v)
            paths_codes.append(code[::-1])
            paths_points.append(point[::-1])
        depth = max(len(c) for c in paths_codes)
        codes = np.zeros((v, depth), dtype=np.float32)
        points = np.zeros((v, depth), dtype=np.int64)
        lengths = np.array([len(c) for c in paths_codes], dtype=np.int64)
        for word, (code, point) in enumerate(zip(paths_codes, paths_points, strict=True)):
            codes[word, : len(code)] = code
            points[word, : len(point)] = point
        return cls(codes, points, lengths)
