"""The decoding batch: the caches of the sequences being generated, side by side, and the step graph.

Two kinds, picked by the manifest's `decoder.cache`:

- `KVCacheBatch` (GPT): one key/value tensor (L, 2, B, H, P, D) for all rows. Sequences have
  different lengths, so rows are LEFT-padded to the longest one: row b's real entries are its last
  P - padding[b] slots, and the graph masks the rest. Every step appends one slot to every row, so
  rows stay right-aligned; a joining sequence is left-padded to the batch (or the batch to it); a
  leaving row is dropped and all-padding columns at the left are trimmed away.
- `StateBatch` (GRU): the hidden state (L, B, hidden); rows join and leave, nothing to pad.

`prefill` and `step` run the graph (blocking: call them off the event loop); `join` and `keep`
are cheap array bookkeeping done between steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from myelin_serving.runtime import OnnxGraph


@dataclass
class Rows:
    """Caches of freshly prefilled sequences, ready to join a batch."""

    cache: np.ndarray
    padding: np.ndarray  # (N,) int64; zeros for state caches


class CacheBatch(ABC):
    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.rows = 0

    @abstractmethod
    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Rows]:
        """Run the prompts from an empty cache: next-token logits (N, vocab) and their caches."""

    @abstractmethod
    def join(self, rows: Rows) -> None:
        """Append prefilled rows after the current ones."""

    @abstractmethod
    def keep(self, indices: list[int]) -> None:
        """Keep only these rows, in this order."""

    @abstractmethod
    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (B,); return next-token logits (B, vocab) and advance the caches."""


class KVCacheBatch(CacheBatch):
    def __init__(self, graph: OnnxGraph, *, layers: int, heads: int, head_dim: int) -> None:
        super().__init__(graph)
        self._shape = (layers, 2, 0, heads, 0, head_dim)
        self.cache = np.zeros(self._shape, dtype=np.float32)  # (L, 2, B, H, P, D)
        self.padding = np.zeros(0, dtype=np.int64)  # (B,)

    @property
    def past_length(self) -> int:
        return int(self.cache.shape[4])

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Rows]:
        longest = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), longest), dtype=np.int64)  # (N, T), left-padded
        padding = np.array([longest - len(p) for p in prompts], dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = prompt
        layers, two, _, heads, _, head_dim = self._shape
        empty = np.zeros((layers, two, len(prompts), heads, 0, head_dim), dtype=np.float32)
        out = self.graph.run({"input_ids": ids, "past_key_values": empty, "padding": padding})
        return out["logits"], Rows(out["present_key_values"], padding)

    def join(self, rows: Rows) -> None:
        if self.rows == 0:
            self.cache, self.padding = rows.cache, rows.padding.copy()
        else:
            length = max(self.past_length, rows.cache.shape[4])
            old, old_pad = _left_pad(self.cache, self.padding, length)
            new, new_pad = _left_pad(rows.cache, rows.padding, length)
            self.cache = np.concatenate([old, new], axis=2)
            self.padding = np.concatenate([old_pad, new_pad])
        self.rows = self.cache.shape[2]

    def keep(self, indices: list[int]) -> None:
        if not indices:
            self.cache = np.zeros(self._shape, dtype=np.float32)
            self.padding = np.zeros(0, dtype=np.int64)
            self.rows = 0
            return
        index = np.asarray(indices, dtype=np.int64)
        padding = self.padding[index]
        trim = int(padding.min())  # columns that are padding in every remaining row
        self.cache = np.ascontiguousarray(self.cache[:, :, index, :, trim:, :])
        self.padding = padding - trim
        self.rows = len(indices)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        out = self.graph.run(
            {
                "input_ids": tokens.reshape(-1, 1).astype(np.int64),
                "past_key_values": self.cache,
                "padding": self.padding,
            }
        )
        self.cache = out["present_key_values"]
        return out["logits"]


def _left_pad(cache: np.ndarray, padding: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    extra = length - cache.shape[4]
    if extra == 0:
        return cache, padding
    widths: Any = [(0, 0)] * cache.ndim
    widths[4] = (extra, 0)
    return np.pad(cache, widths), padding + extra


class StateBatch(CacheBatch):
    def __init__(self, graph: OnnxGraph, *, layers: int, hidden: int) -> None:
        super().__init__(graph)
        self._layers, self._hidden = layers, hidden
        self.state = np.zeros((layers, 0, hidden), dtype=np.float32)  # (L, B, hidden)

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Rows]:
        # No padding inside a recurrence: prompts of equal length run together.
        logits: list[np.ndarray] = [np.empty(0)] * len(prompts)
        states: list[np.ndarray] = [np.empty(0)] * len(prompts)
        by_length: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_length.setdefault(len(prompt), []).append(i)
        for group in by_length.values():
            ids = np.array([prompts[i] for i in group], dtype=np.int64)  # (n, T)
            zeros = np.zeros((self._layers, len(group), self._hidden), dtype=np.float32)
            out = self.graph.run({"input_ids": ids, "state": zeros})
            for j, i in enumerate(group):
                logits[i] = out["logits"][j]
                states[i] = out["next_state"][:, j]
        return np.stack(logits), Rows(np.stack(states, axis=1), np.zeros(len(prompts), dtype=np.int64))

    def join(self, rows: Rows) -> None:
        self.state = np.concatenate([self.state, rows.cache], axis=1)
        self.rows = self.state.shape[1]

    def keep(self, indices: list[int]) -> None:
        self.state = np.ascontiguousarray(self.state[:, np.asarray(indices, dtype=np.int64)])
        self.rows = len(indices)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        out = self.graph.run({"input_ids": tokens.reshape(-1, 1).astype(np.int64), "state": self.state})
        self.state = out["next_state"]
        return out["logits"]
