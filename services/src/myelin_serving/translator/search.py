"""Beam search for one sentence, one decoder step at a time: plain numpy, no onnxruntime, no gRPC.

The step loop (decoding.py) runs the decoder for every live hypothesis of every sentence at once
and hands each sentence its rows of log-probabilities; `BeamSearch.advance` picks the hypotheses
that go on and says which row each continues from, so the loop can reorder the key/value cache.

Ranking (Wu et al. 2016): score = log P(y | x) / lp(y), lp(y) = ((5 + |y|) / 6) ^ alpha, with |y|
counting the end-of-sentence token. Each step takes the 2k best continuations of the k live
hypotheses; those ending in EOS among the k best are finished, the best k others live on. A
sentence is done when k hypotheses have finished or `max_length` tokens were generated (the live
ones then count too, marked unfinished). beam_size 1 is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SearchOptions:
    beam_size: int
    max_length: int  # tokens generated at most, EOS included
    length_penalty: float  # alpha


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # generated ids, without EOS
    log_probability: float  # EOS included when finished
    score: float  # log_probability / lp(length)
    length: int  # tokens generated, EOS included when finished
    finished: bool


def length_penalty(length: int, alpha: float) -> float:
    return float(((5.0 + length) / 6.0) ** alpha)


class BeamSearch:
    def __init__(self, options: SearchOptions, *, eos_id: int, banned: Sequence[int] = ()) -> None:
        self.options = options
        self.eos_id = eos_id
        self.banned = np.asarray(banned, dtype=np.int64)  # never generated (padding, BOS)
        self.scores = np.zeros(1, dtype=np.float64)  # (width,) cumulative log-probability of each live row
        self.histories: list[tuple[int, ...]] = [()]
        self.finished: list[Hypothesis] = []
        self.length = 0  # tokens generated so far by every live hypothesis
        self.done = False

    @property
    def width(self) -> int:
        """Live hypotheses, i.e. decoder rows this sentence needs at the next step."""
        return 0 if self.done else len(self.histories)

    @property
    def last_tokens(self) -> list[int]:
        return [h[-1] for h in self.histories]

    def advance(self, log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log_probs (width, V) -> parent row and token of each hypothesis that lives on."""
        if self.done:
            raise RuntimeError("advance() on a finished search")
        k = self.options.beam_size
        self.length += 1
        candidates = self.scores[:, None] + log_probs.astype(np.float64)  # (width, V)
        if self.banned.size:
            candidates[:, self.banned] = -np.inf
        flat = candidates.ravel()
        n = min(2 * k, flat.size)
        top = np.argpartition(-flat, n - 1)[:n]
        top = top[np.argsort(-flat[top], kind="stable")]
        vocab = log_probs.shape[1]
        parents: list[int] = []
        tokens: list[int] = []
        scores: list[float] = []
        for rank, index in enumerate(top):
            parent, token, score = int(index // vocab), int(index % vocab), float(flat[index])
            if not np.isfinite(score):
                break
            if token == self.eos_id:
                if rank < k:
                    self._finish(self.histories[parent], score, finished=True)
                continue
            if len(parents) < k:
                parents.append(parent)
                tokens.append(token)
                scores.append(score)
        histories = [self.histories[p] + (t,) for p, t in zip(parents, tokens, strict=True)]
        if len(self.finished) >= k or self.length >= self.options.max_length or not parents:
            if len(self.finished) < k:  # out of length: the live hypotheses are answers too, unfinished
                for history, score in zip(histories, scores, strict=True):
                    self._finish(history, score, finished=False)
            self.done = True
            self.histories, self.scores = [], np.zeros(0)
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        self.histories, self.scores = histories, np.asarray(scores)
        return np.asarray(parents, dtype=np.int64), np.asarray(tokens, dtype=np.int64)

    def _finish(self, history: tuple[int, ...], log_probability: float, *, finished: bool) -> None:
        length = len(history) + (1 if finished else 0)
        score = log_probability / length_penalty(length, self.options.length_penalty)
        self.finished.append(Hypothesis(history, log_probability, score, length, finished))

    def ranked(self) -> list[Hypothesis]:
        """The answers, best first (finished ones before unfinished, then by score): at most beam_size.

        One step can finish several hypotheses at once, so more than beam_size may have finished.
        """
        if not self.done:
            raise RuntimeError("ranked() before the search is done")
        ranked = sorted(self.finished, key=lambda h: (h.finished, h.score), reverse=True)
        return ranked[: self.options.beam_size]

    def best(self) -> Hypothesis:
        return self.ranked()[0]
