"""Token ids for sentence pairs, length-bucketed batches, and padding into tensors.

A batch holds pairs of similar length (sorted by source then target length, ties broken at random
each epoch) up to `max_tokens` padded tokens on its longer side, so little compute goes to padding;
the batches themselves are visited in a random order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from myelin_training.data.pairs import Pair
from myelin_training.translator import tokenizer as tk


@dataclass
class EncodedPairs:
    sources: list[list[int]]  # subword ids, no specials
    targets: list[list[int]]

    def __len__(self) -> int:
        return len(self.sources)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([len(s) for s in self.sources]), np.array([len(t) for t in self.targets])


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[Pair], *, max_tokens: int | None = None) -> EncodedPairs:
    """Tokenise both sides; with `max_tokens`, drop pairs with a side longer than that (training only)."""
    sources = tk.encode(tokenizer, [p.source for p in pairs])
    targets = tk.encode(tokenizer, [p.target for p in pairs])
    if max_tokens is not None:
        keep = [
            i
            for i, (s, t) in enumerate(zip(sources, targets, strict=True))
            if 0 < len(s) <= max_tokens and 0 < len(t) <= max_tokens
        ]
        sources, targets = [sources[i] for i in keep], [targets[i] for i in keep]
    return EncodedPairs(sources, targets)


def make_batches(data: EncodedPairs, max_tokens: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index arrays, one per batch: similar lengths together, each under `max_tokens` padded tokens."""
    src_len, tgt_len = data.lengths()
    src_len, tgt_len = src_len + 1, tgt_len + 1  # EOS on the source; BOS (input) or EOS (output) on the target
    noise = rng.random(len(data)) if rng is not None else np.zeros(len(data))
    order = np.lexsort((noise, tgt_len, src_len))  # by source length, then target length, then at random
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, index in enumerate(order):
        longest_if_added = max(longest, src_len[index], tgt_len[index])
        if i > start and longest_if_added * (i - start + 1) > max_tokens:
            batches.append(order[start:i])
            start, longest_if_added = i, max(src_len[index], tgt_len[index])
        longest = longest_if_added
    if start < len(order):
        batches.append(order[start:])
    if rng is not None:
        rng.shuffle(batches)
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int = tk.PAD_ID) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def source_tensors(sources: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source ids + EOS, padded: ids (B, S) and mask (B, S), True on real tokens."""
    ids = pad([[*s, tk.EOS_ID] for s in sources])
    return ids, ids != tk.PAD_ID


def collate(data: EncodedPairs, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> source ids (B, S), source mask (B, S), decoder input BOS+y (B, T), decoder target y+EOS (B, T)."""
    source_ids, source_mask = source_tensors([data.sources[i] for i in index])
    target_in = pad([[tk.BOS_ID, *data.targets[i]] for i in index])
    target_out = pad([[*data.targets[i], tk.EOS_ID] for i in index])
    return source_ids, source_mask, target_in, target_out
