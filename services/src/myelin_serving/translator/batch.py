"""The rows of one decoder step: every live hypothesis of every sentence being translated.

Sentences join and leave between steps. Each row carries its own key/value cache, cross-attention
keys/values and source mask; rows of different ages and source lengths share arrays padded to a
common past length P and source length S, with masks marking the real slots:

    past_keys, past_values   (N, L, H, P, Dh)   past_mask     (N, P)  False on padding slots
    cross_keys, cross_values (N, L, H, S, Dh)   source_mask   (N, S)
    tokens, positions        (N,)               the next input token of each row and its position

A sentence's rows are contiguous, in `jobs` order. After each step every sentence's search says
which of its rows continue (and with which token); one gather reorders the whole cache. Columns no
row uses any more (past slots older than the oldest live sentence, source padding beyond the
longest live source) are trimmed, so P never exceeds the longest translation in flight.
The four key/value tensors are the decoder's `tensors` (devices.py): numpy arrays, or OrtValues
that stay on the graph's device (the masks, tokens and positions are small host arrays).
No asyncio here: the step loop (loop.py) drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from myelin_serving.devices import HOST, Tensors
from myelin_serving.translator.search import BeamSearch


@dataclass(eq=False)
class Job:
    """One sentence to translate: its source ids (EOS included) and its search."""

    source: np.ndarray  # (S,) int64
    search: BeamSearch
    owner: Any = None  # whatever the loop needs to answer (a future, a deadline)
    extra: dict[str, Any] = field(default_factory=dict)


def _pad_axis(array: np.ndarray, axis: int, size: int, value: float | bool = 0) -> np.ndarray:
    if array.shape[axis] == size:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return np.pad(array, widths, constant_values=value)


class ActiveBatch:
    def __init__(self, layers: int, heads: int, head_dim: int, *, bos_id: int, tensors: Tensors[Any] = HOST) -> None:
        self.bos_id = bos_id
        self.tensors = tensors
        empty = (0, layers, heads, 0, head_dim)
        self.jobs: list[Job] = []
        self.past_keys, self.past_values = tensors.zeros(empty), tensors.zeros(empty)
        self.past_mask = np.zeros((0, 0), dtype=bool)
        self.cross_keys, self.cross_values = tensors.zeros(empty), tensors.zeros(empty)
        self.source_mask = np.zeros((0, 0), dtype=bool)
        self.tokens = np.zeros(0, dtype=np.int64)
        self.positions = np.zeros(0, dtype=np.int64)

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return len(self.jobs)

    def join(self, jobs: Sequence[Job], cross_keys: Any, cross_values: Any, source_mask: np.ndarray) -> None:
        """Add sentences (one row each, BOS at position 0) with their encoder outputs (n, L, H, S', Dh)."""
        t = self.tensors
        n = len(jobs)
        s = max(self.source_mask.shape[1], source_mask.shape[1])
        p = self.past_mask.shape[1]
        rows = self.rows
        # the new rows' past slots are zeros: the old rows zero-padded on the row axis
        self.past_keys = t.window(self.past_keys, 0, 0, rows, after=n)
        self.past_values = t.window(self.past_values, 0, 0, rows, after=n)
        self.past_mask = np.concatenate([self.past_mask, np.zeros((n, p), dtype=bool)])

        def widen(old: Any, new: Any) -> Any:  # both to s source slots, old rows first
            have, add = self.source_mask.shape[1], source_mask.shape[1]
            return t.concat([t.window(old, 3, 0, have, after=s - have), t.window(new, 3, 0, add, after=s - add)], 0)

        self.cross_keys = widen(self.cross_keys, cross_keys)
        self.cross_values = widen(self.cross_values, cross_values)
        self.source_mask = np.concatenate(
            [_pad_axis(self.source_mask, 1, s, False), _pad_axis(source_mask, 1, s, False)]
        )
        self.tokens = np.concatenate([self.tokens, np.full(n, self.bos_id, dtype=np.int64)])
        self.positions = np.concatenate([self.positions, np.zeros(n, dtype=np.int64)])
        self.jobs.extend(jobs)

    def feeds(self) -> dict[str, Any]:
        """The decoder step's inputs for every row: one new token each."""
        host = {
            "input_ids": self.tokens[:, None],
            "position_ids": self.positions[:, None],
            "past_mask": self.past_mask,
            "source_mask": self.source_mask,
        }
        return {
            **{name: np.ascontiguousarray(array) for name, array in host.items()},  # trimmed views copy here
            "past_keys": self.past_keys,
            "past_values": self.past_values,
            "cross_keys": self.cross_keys,
            "cross_values": self.cross_values,
        }

    def advance(self, log_probs: np.ndarray, present_keys: Any, present_values: Any) -> list[Job]:
        """Apply one decoder step's outputs: (N, V) log-probs and (N, L, H, P + 1, Dh) caches.

        Returns the sentences whose search finished; they have left the batch.
        """
        past_mask = np.concatenate([self.past_mask, np.ones((self.rows, 1), dtype=bool)], axis=1)
        rows: list[np.ndarray] = []
        cross_rows: list[np.ndarray] = []
        tokens: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        live: list[Job] = []
        finished: list[Job] = []
        offset = 0
        for job in self.jobs:
            width = job.search.width
            parents, next_tokens = job.search.advance(log_probs[offset : offset + width])
            if job.search.done:
                finished.append(job)
            else:
                live.append(job)
                rows.append(offset + parents)
                # Every row of a sentence holds the same source: any of its old rows will do, and
                # keeping them in place when the width is unchanged spares a copy.
                cross_rows.append(offset + np.minimum(np.arange(len(parents)), width - 1))
                tokens.append(next_tokens)
                positions.append(np.full(len(parents), job.search.length, dtype=np.int64))
            offset += width
        self.jobs = live
        self._select(
            _cat(rows), _cat(cross_rows), present_keys, present_values, past_mask, _cat(tokens), _cat(positions)
        )
        return finished

    def remove(self, drop: Callable[[Job], bool]) -> list[Job]:
        """Take out the sentences `drop` picks (cancelled, out of time) between steps."""
        keep_rows: list[np.ndarray] = []
        live: list[Job] = []
        removed: list[Job] = []
        offset = 0
        for job in self.jobs:
            width = job.search.width
            if drop(job):
                removed.append(job)
            else:
                live.append(job)
                keep_rows.append(np.arange(offset, offset + width))
            offset += width
        if removed:
            self.jobs = live
            index = _cat(keep_rows)
            self._select(
                index,
                index,
                self.past_keys,
                self.past_values,
                self.past_mask,
                self.tokens[index],
                self.positions[index],
            )
        return removed

    def _select(
        self,
        rows: np.ndarray,
        cross_rows: np.ndarray,
        keys: Any,
        values: Any,
        past_mask: np.ndarray,
        tokens: np.ndarray,
        positions: np.ndarray,
    ) -> None:
        t = self.tensors
        identity = len(rows) == past_mask.shape[0] and bool(np.array_equal(rows, np.arange(len(rows))))
        past_mask = past_mask if identity else past_mask[rows]
        taken = None if identity else rows
        # Trim cache slots that no row uses any more (older than the oldest live sentence).
        used = np.flatnonzero(past_mask.any(axis=0))
        slots = past_mask.shape[1]
        start = int(used[0]) if used.size else slots
        self.past_mask = past_mask[:, start:]
        self.past_keys = t.window(keys, 3, start, slots, rows=taken)
        self.past_values = t.window(values, 3, start, slots, rows=taken)
        same = len(cross_rows) == self.source_mask.shape[0] and np.array_equal(cross_rows, np.arange(len(cross_rows)))
        if not same:
            source_mask = self.source_mask[cross_rows]
            width = int(np.flatnonzero(source_mask.any(axis=0))[-1]) + 1 if source_mask.size else 0
            self.source_mask = source_mask[:, :width]
            self.cross_keys = t.window(self.cross_keys, 3, 0, width, rows=cross_rows)
            self.cross_values = t.window(self.cross_values, 3, 0, width, rows=cross_rows)
        self.tokens, self.positions = tokens, positions


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
