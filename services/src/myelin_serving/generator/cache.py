"""The decoding batch: the caches of the sequences being generated, side by side, and the step graph.

Two kinds, picked by the manifest's `decoder.cache`:

- `KVCacheBatch` (GPT): a key and a value tensor (B, H, P, D) per layer for all rows. Sequences
  have different lengths, so rows are LEFT-padded to the longest one: row b's real entries are its
  last P - padding[b] slots, and the graph masks the rest. Every step appends one slot to every row, so
  rows stay right-aligned; a joining sequence is left-padded to the batch (or the batch to it); a
  leaving row is dropped and all-padding columns at the left are trimmed away.
- `StateBatch` (GRU): the hidden state (L, B, hidden); rows join and leave, nothing to pad.

`prefill` and `step` run the graph (blocking: call them off the event loop); `join` and `keep`
are cheap array bookkeeping done between steps. A step of ONE row runs on `lone_graph` when
given: the same graph in a session with one intra-op thread. A single token's matrix-vector
products are too small to split across threads, and waking the pool's threads (which do not spin)
for each of the graph's ~100 nodes costs more than they save; batches keep every thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from myelin_serving.runtime import OnnxGraph


@dataclass
class Rows:
    """Caches of freshly prefilled sequences, ready to join a batch."""

    cache: list[np.ndarray]  # KV: one (N, H, P, D) array per cache input; state: [(L, N, hidden)]
    padding: np.ndarray  # (N,) int64; zeros for state caches


class CacheBatch(ABC):
    def __init__(self, graph: OnnxGraph, lone_graph: OnnxGraph | None = None) -> None:
        self.graph = graph
        self.lone_graph = lone_graph or graph
        self.rows = 0

    def _step_graph(self) -> OnnxGraph:
        return self.lone_graph if self.rows == 1 else self.graph

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
    def __init__(
        self,
        graph: OnnxGraph,
        *,
        inputs: list[str],
        outputs: list[str],
        heads: int,
        head_dim: int,
        lone_graph: OnnxGraph | None = None,
    ) -> None:
        super().__init__(graph, lone_graph)
        self._inputs, self._outputs = inputs, outputs
        self._heads, self._head_dim = heads, head_dim
        self.cache = self._empty(0)  # one (B, H, P, D) array per cache input
        self.padding = np.zeros(0, dtype=np.int64)  # (B,)

    def _empty(self, rows: int) -> list[np.ndarray]:
        return [np.zeros((rows, self._heads, 0, self._head_dim), dtype=np.float32) for _ in self._inputs]

    @property
    def past_length(self) -> int:
        return int(self.cache[0].shape[2])

    def _run(
        self, graph: OnnxGraph, ids: np.ndarray, padding: np.ndarray, cache: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"input_ids": ids, "padding": padding, **dict(zip(self._inputs, cache, strict=True))}
        out = graph.run(feeds, ["logits", *self._outputs])
        return out["logits"], [out[name] for name in self._outputs]

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Rows]:
        longest = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), longest), dtype=np.int64)  # (N, T), left-padded
        padding = np.array([longest - len(p) for p in prompts], dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = prompt
        logits, present = self._run(self.graph, ids, padding, self._empty(len(prompts)))
        return logits, Rows(present, padding)

    def join(self, rows: Rows) -> None:
        if self.rows == 0:
            self.cache, self.padding = rows.cache, rows.padding.copy()
        else:
            length = max(self.past_length, rows.cache[0].shape[2])
            old_extra, new_extra = length - self.past_length, length - rows.cache[0].shape[2]
            self.cache = [
                np.concatenate([_left_pad(old, old_extra), _left_pad(new, new_extra)])
                for old, new in zip(self.cache, rows.cache, strict=True)
            ]
            self.padding = np.concatenate([self.padding + old_extra, rows.padding + new_extra])
        self.rows = len(self.padding)

    def keep(self, indices: list[int]) -> None:
        if not indices:
            self.cache, self.padding, self.rows = self._empty(0), np.zeros(0, dtype=np.int64), 0
            return
        index = np.asarray(indices, dtype=np.int64)
        padding = self.padding[index]
        trim = int(padding.min())  # columns that are padding in every remaining row
        self.cache = [np.ascontiguousarray(c[index, :, trim:, :]) for c in self.cache]
        self.padding = padding - trim
        self.rows = len(indices)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        ids = tokens.reshape(-1, 1).astype(np.int64, copy=False)  # (B, 1)
        logits, self.cache = self._run(self._step_graph(), ids, self.padding, self.cache)
        return logits


def _left_pad(cache: np.ndarray, extra: int) -> np.ndarray:
    # (B, H, P, D) -> (B, H, extra + P, D), zeros first
    return cache if extra == 0 else np.pad(cache, [(0, 0), (0, 0), (extra, 0), (0, 0)])


class StateBatch(CacheBatch):
    def __init__(self, graph: OnnxGraph, *, layers: int, hidden: int, lone_graph: OnnxGraph | None = None) -> None:
        super().__init__(graph, lone_graph)
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
        return np.stack(logits), Rows([np.stack(states, axis=1)], np.zeros(len(prompts), dtype=np.int64))

    def join(self, rows: Rows) -> None:
        self.state = np.concatenate([self.state, rows.cache[0]], axis=1)
        self.rows = self.state.shape[1]

    def keep(self, indices: list[int]) -> None:
        self.state = np.ascontiguousarray(self.state[:, np.asarray(indices, dtype=np.int64)])
        self.rows = len(indices)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        ids = tokens.reshape(-1, 1).astype(np.int64, copy=False)  # (B, 1)
        out = self._step_graph().run({"input_ids": ids, "state": self.state})
        self.state = out["next_state"]
        return out["logits"]
