"""Training examples from a chunk of the token stream, vectorised with numpy (no per-word loops).

A chunk is (ids, sentence) of equal length: word ids and the sentence each token belongs to.
Per chunk, as word2vec.c does per sentence: frequent words are subsampled away first; each
remaining target draws its window b uniformly from 1..window, so nearer words are used more often;
context words never cross a sentence boundary. Then:

- skip-gram: one example per (target, context) pair; the context word is the input and the target
  the predicted word (word2vec.c's and gensim's orientation);
- CBOW: one example per target; the input is the mean of its context words (padded with `pad`).

The predicted side is either the target plus `negative` words drawn from the unigram table
(labels 1, 0, ..., 0; a negative that happens to be the target gets weight 0, as word2vec.c skips
it), or the target's Huffman path (labels 1 - code, padding weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from myelin_training.word2vec.vocab import HuffmanTree


@dataclass
class Examples:
    inputs: np.ndarray  # (B, C) int64 input-table rows; C = 1 (skip-gram) or 2 * window (CBOW, padded)
    counts: np.ndarray  # (B,) float32 real context words per example (1 for skip-gram)
    targets: np.ndarray  # (B,) int64 predicted word per example
    position: np.ndarray  # (B,) int64 the target's index in the chunk (for progress through the words)

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: np.ndarray | slice) -> Examples:
        return Examples(self.inputs[index], self.counts[index], self.targets[index], self.position[index])


@dataclass
class Outputs:
    """The predicted side of a batch: rows of the output table with their labels and weights."""

    rows: np.ndarray  # (B, K) int64
    labels: np.ndarray  # (B, K) float32
    weights: np.ndarray  # (B, K) float32

    def take(self, index: slice) -> Outputs:
        return Outputs(self.rows[index], self.labels[index], self.weights[index])


def subsample(ids: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the tokens that survive subsampling."""
    return np.flatnonzero(rng.random(len(ids), dtype=np.float32) < keep[ids])


def _windows(n: int, window: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(1, window + 1, size=n, dtype=np.int64)


def skipgram(
    ids: np.ndarray, sentence: np.ndarray, window: int, rng: np.random.Generator, *, shuffle: bool = True
) -> Examples:
    """Every (context -> target) pair of the chunk; `ids` are the tokens left after subsampling."""
    n = len(ids)
    reach = _windows(n, window, rng)
    position = np.arange(n, dtype=np.int64)
    centres, contexts = [], []
    for d in range(1, window + 1):
        # Targets i with a context at i + d and at i - d, within their window and sentence.
        right = position[: n - d][(reach[: n - d] >= d) & (sentence[: n - d] == sentence[d:])]
        left = position[d:][(reach[d:] >= d) & (sentence[d:] == sentence[: n - d])]
        centres += [right, left]
        contexts += [right + d, left - d]
    centre = np.concatenate(centres)
    context = np.concatenate(contexts)
    if shuffle:
        # Spread each word's pairs over the chunk's batches, so one batch rarely updates a row twice.
        order = rng.permutation(len(centre))
        centre, context = centre[order], context[order]
    ids64 = ids.astype(np.int64)
    return Examples(
        inputs=ids64[context][:, None],
        counts=np.ones(len(centre), dtype=np.float32),
        targets=ids64[centre],
        position=centre,
    )


def cbow(
    ids: np.ndarray, sentence: np.ndarray, window: int, pad: int, rng: np.random.Generator, *, shuffle: bool = True
) -> Examples:
    """One example per target that has at least one context word: (2 * window) padded context ids."""
    n = len(ids)
    reach = _windows(n, window, rng)
    ids64 = ids.astype(np.int64)
    inputs = np.full((n, 2 * window), pad, dtype=np.int64)
    for d in range(1, window + 1):
        ok = (reach[: n - d] >= d) & (sentence[: n - d] == sentence[d:])  # target i, context i + d
        inputs[: n - d, 2 * d - 2] = np.where(ok, ids64[d:], pad)
        ok = (reach[d:] >= d) & (sentence[d:] == sentence[: n - d])  # target i, context i - d
        inputs[d:, 2 * d - 1] = np.where(ok, ids64[: n - d], pad)
    counts = (inputs != pad).sum(axis=1).astype(np.float32)
    position = np.flatnonzero(counts > 0)
    if shuffle:
        position = position[rng.permutation(len(position))]
    return Examples(inputs[position], counts[position], ids64[position], position)


def negative_outputs(targets: np.ndarray, negative: int, table: np.ndarray, rng: np.random.Generator) -> Outputs:
    """Column 0: the target (label 1); columns 1..negative: words drawn from the table (label 0)."""
    b = len(targets)
    drawn = table[rng.integers(0, len(table), size=(b, negative), dtype=np.int32)]  # (B, negative) int32
    rows = np.empty((b, negative + 1), dtype=np.int64)
    rows[:, 0] = targets
    rows[:, 1:] = drawn
    labels = np.zeros((b, negative + 1), dtype=np.float32)
    labels[:, 0] = 1.0
    weights = np.ones((b, negative + 1), dtype=np.float32)
    np.not_equal(drawn, targets[:, None], out=weights[:, 1:], casting="unsafe")
    return Outputs(rows, labels, weights)


def huffman_outputs(targets: np.ndarray, tree: HuffmanTree) -> Outputs:
    """The inner nodes on each target's path; label 1 - code; weight 0 past the path's end."""
    depth = tree.codes.shape[1]
    lengths = tree.lengths[targets]
    longest = int(lengths.max(initial=1))
    weights = (np.arange(depth)[None, :longest] < lengths[:, None]).astype(np.float32)
    return Outputs(tree.points[targets, :longest], 1.0 - tree.codes[targets, :longest], weights)


def cap_scales(
    rows: np.ndarray, batch_size: int, cap: int, slots: np.ndarray | None = None, pad: int = -1
) -> np.ndarray | None:
    """Per occurrence of a row in (N, K) `rows`: 1, or cap / n where the row occurs n > cap times in
    its batch of `batch_size` consecutive examples; None when no row exceeds the cap.

    Summed updates of a row taken at one snapshot overshoot where word2vec.c's one-after-another
    updates settle (a frequent word is a negative hundreds of times per batch); capping them keeps
    the step of a frequent word's row like `cap` sequential steps. `slots` (see `hot_slots`) limits
    the counting to the rows that can reach the cap; None counts every row. `pad` never counts.
    """
    if cap <= 0 or len(rows) == 0:
        return None
    n, k = rows.shape
    flat = rows.reshape(-1)
    if slots is None:
        unique, slot = np.unique(flat, return_inverse=True)
        slot[unique[slot] == pad] = -1
        width = len(unique)
    else:
        slot = slots[flat]
        width = int(slots.max(initial=-1)) + 1
    hot = np.flatnonzero(slot >= 0)
    if len(hot) == 0:
        return None
    key = (hot // (k * batch_size)) * width + slot[hot]
    counts = np.bincount(key)
    if counts.max(initial=0) <= cap:
        return None
    scale = np.ones(n * k, dtype=np.float32)
    scale[hot] = cap / np.maximum(counts[key], cap).astype(np.float32)
    return scale.reshape(n, k)


def hot_slots(expected_per_batch: np.ndarray, cap: int) -> np.ndarray:
    """(V,) int32: a compact slot for each row expected at least cap / 4 times per batch, -1 for the
    rest (a row expected below a quarter of the cap essentially never exceeds it)."""
    slots = np.full(len(expected_per_batch), -1, dtype=np.int32)
    hot = np.flatnonzero(expected_per_batch >= cap / 4)
    slots[hot] = np.arange(len(hot), dtype=np.int32)
    return slots
