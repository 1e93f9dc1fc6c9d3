"""The decoding batch: the caches of the sequences being generated, side by side, and the step graph.

Two kinds, picked by the manifest's `decoder.cache`:

- `KVCacheBatch` (GPT): a key buffer (B, H, D, S) (keys transposed, see the model) and a value
  buffer (B, H, S, D) per layer for all rows, of which the first `length` slots are filled; the
  graph only reads them and returns the step's new keys and values, which are written in place
  at slot `length`. No step copies the cache; S grows by `SLOT_CHUNK` slots at a time (one copy
  per chunk of steps), and the unfilled slots cost the graph a little attention work, never a
  copy. Sequences have different lengths, so rows are LEFT-padded to the longest one: row b's
  real entries are slots padding[b] .. length - 1, and the graph masks the rest. A joining
  sequence is left-padded to the batch (or the batch to it); a leaving row is dropped and
  all-padding slots at the left are trimmed away. Joining and leaving rebuild the buffers: a
  copy, once per request, not once per token.
- `StateBatch` (GRU): the hidden state (L, B, hidden); rows join and leave, nothing to pad.

`prefill` and `step` run the graph (blocking: call them off the event loop); `join` and `keep`
are cheap array bookkeeping done between steps. The caches are the graph's `tensors` (devices.py):
numpy arrays, or OrtValues that stay on the graph's device, where only the step's token ids go in
and its logits come out.
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

    cache: list[Any]  # KV: keys (N, H, D, T), values (N, H, T, D), T filled slots; state: [(L, N, hidden)]
    padding: np.ndarray  # (N,) int64; zeros for state caches


class CacheBatch(ABC):
    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.tensors = graph.tensors
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


SLOT_CHUNK = 32  # cache slots added at a time: S - length is 1..32 after a step


class KVCacheBatch(CacheBatch):
    def __init__(
        self,
        graph: OnnxGraph,
        *,
        inputs: list[str],
        outputs: list[str],
        slot_axes: list[int],
        heads: int,
        head_dim: int,
    ) -> None:
        super().__init__(graph)
        self._inputs, self._outputs = inputs, outputs
        # per cache input: 3 for keys stored (B, H, D, S), 2 for values (B, H, S, D)
        self._axes = slot_axes
        self._heads, self._head_dim = heads, head_dim
        self.length = 0  # filled slots, the same in every row (rows are right-aligned)
        self.cache = self._buffers(0, 0)  # one buffer per cache input
        self.padding = np.zeros(0, dtype=np.int64)  # (B,)
        self._feeds: dict[str, Any] = {}

    def _buffers(self, rows: int, slots: int) -> list[Any]:
        # zeros, not empty: unfilled slots are masked, but 0 x NaN garbage would still be NaN
        h, d = self._heads, self._head_dim
        return [self.tensors.zeros((rows, h, d, slots) if axis == 3 else (rows, h, slots, d)) for axis in self._axes]

    @staticmethod
    def _slots_for(length: int) -> int:
        return (length // SLOT_CHUNK + 1) * SLOT_CHUNK  # room for at least one more token

    @property
    def past_length(self) -> int:
        return self.length

    def _capacity(self) -> int:
        return self.tensors.shape(self.cache[0])[self._axes[0]]

    def _set(self, cache: list[Any], padding: np.ndarray, length: int) -> None:
        self.cache, self.padding, self.length = cache, padding, length
        self.rows = len(padding)
        self._feeds = dict(zip(self._inputs, cache, strict=True))  # the same buffers every step

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Rows]:
        longest = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), longest), dtype=np.int64)  # (N, T), left-padded
        padding = np.array([longest - len(p) for p in prompts], dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = prompt
        feeds = {
            "input_ids": ids,
            "padding": padding,
            "length": np.array(0, dtype=np.int64),
            **dict(zip(self._inputs, self._buffers(len(prompts), 0), strict=True)),
        }
        host, kept = self.tensors.run(self.graph.session, feeds, ["logits"], self._outputs)
        return host["logits"], Rows([kept[name] for name in self._outputs], padding)  # T slots each

    def join(self, rows: Rows) -> None:
        t = self.tensors
        joining = t.shape(rows.cache[0])[self._axes[0]]
        length = max(self.length, joining)
        old_shift, new_shift = length - self.length, length - joining  # left padding added
        room = self._slots_for(length) - length
        cache = [
            t.concat(
                [
                    t.window(old, axis, 0, self.length, before=old_shift, after=room),
                    t.window(new, axis, 0, joining, before=new_shift, after=room),
                ],
                axis=0,
            )
            for axis, old, new in zip(self._axes, self.cache, rows.cache, strict=True)
        ]
        self._set(cache, np.concatenate([self.padding + old_shift, rows.padding + new_shift]), length)

    def keep(self, indices: list[int]) -> None:
        if not indices:
            self._set(self._buffers(0, 0), np.zeros(0, dtype=np.int64), 0)
            return
        index = np.asarray(indices, dtype=np.int64)
        padding = self.padding[index]
        trim = int(padding.min())  # slots that are padding in every remaining row
        length = self.length - trim
        after = self._slots_for(length) - length
        cache = [
            self.tensors.window(old, axis, trim, self.length, after=after, rows=index)
            for axis, old in zip(self._axes, self.cache, strict=True)
        ]
        self._set(cache, padding - trim, length)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        if self.length == self._capacity():  # full: grow by a chunk (one copy per chunk)
            after = self._slots_for(self.length) - self.length
            cache = [
                self.tensors.window(old, axis, 0, self.length, after=after)
                for axis, old in zip(self._axes, self.cache, strict=True)
            ]
            self._set(cache, self.padding, self.length)
        self._feeds["input_ids"] = tokens.reshape(-1, 1).astype(np.int64, copy=False)  # (B, 1)
        self._feeds["padding"] = self.padding
        self._feeds["length"] = np.array(self.length, dtype=np.int64)
        host, new = self.tensors.run(self.graph.session, self._feeds, ["logits"], self._outputs)
        # the step's keys/values, written in place at slot `length`
        self.tensors.write(self.cache, [new[name] for name in self._outputs], self._axes, self.length)
        self.length += 1
        return host["logits"]


class StateBatch(CacheBatch):
    def __init__(self, graph: OnnxGraph, *, layers: int, hidden: int) -> None:
        super().__init__(graph)
        self._layers, self._hidden = layers, hidden
        self.state = self.tensors.zeros((layers, 0, hidden))  # (L, B, hidden)

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, Rows]:
        # No padding inside a recurrence: prompts of equal length run together.
        t = self.tensors
        logits = np.empty((len(prompts), 0), dtype=np.float32)
        states: list[Any] = []
        order: list[int] = []
        by_length: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_length.setdefault(len(prompt), []).append(i)
        groups: list[np.ndarray] = []
        for group in by_length.values():
            ids = np.array([prompts[i] for i in group], dtype=np.int64)  # (n, T)
            feeds = {"input_ids": ids, "state": t.zeros((self._layers, len(group), self._hidden))}
            host, kept = t.run(self.graph.session, feeds, ["logits"], ["next_state"])
            groups.append(host["logits"])
            states.append(kept["next_state"])
            order.extend(group)
        # back to the prompts' order: rows of the groups' concatenation, permuted
        inverse = np.argsort(np.asarray(order, dtype=np.int64))
        logits = np.concatenate(groups)[inverse]
        state = t.concat(states, axis=1)
        if len(states) > 1:
            state = t.window(state, 1, 0, len(prompts), rows=inverse, row_axis=1)
        return logits, Rows([state], np.zeros(len(prompts), dtype=np.int64))

    def join(self, rows: Rows) -> None:
        self.state = self.tensors.concat([self.state, rows.cache[0]], axis=1)
        self.rows = self.tensors.shape(self.state)[1]

    def keep(self, indices: list[int]) -> None:
        # axis 0 (layers) left whole; rows taken along axis 1
        self.state = self.tensors.window(
            self.state, 0, 0, self._layers, rows=np.asarray(indices, dtype=np.int64), row_axis=1
        )
        self.rows = len(indices)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        ids = tokens.reshape(-1, 1).astype(np.int64, copy=False)  # (B, 1)
        host, kept = self.tensors.run(
            self.graph.session, {"input_ids": ids, "state": self.state}, ["logits"], ["next_state"]
        )
        self.state = kept["next_state"]
        return host["logits"]
