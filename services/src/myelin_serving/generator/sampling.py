"""Next-token sampling in numpy, one seeded generator per sequence.

Order (as in Hugging Face transformers): repetition penalty, temperature, top-k, top-p, then one
draw by inverse CDF from the sequence's own `numpy.random.Generator`. Nothing here looks at other
sequences, so a seeded request gives the same text whatever else is batched with it (up to
float32 rounding of the logits themselves, which can only matter when a draw lands within ~1e-7
of a boundary between two tokens).

`sample_rows` picks the next tokens of a whole decoding step: the rows with plain temperature
sampling (no top-k, top-p or penalty: the common request) go through one set of numpy calls
together, row-wise operations only, so a row's token does not depend on its neighbours; a
plain sampler called alone takes the same path with one row.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from myelin_serving.errors import InvalidArgument

MAX_TEMPERATURE = 10.0
MAX_PENALTY = 10.0


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # 1: off
    seed: int | None = None  # None: drawn at random

    def validated(self, vocab_size: int) -> SamplingParams:
        t, p, r = self.temperature, self.top_p, self.repetition_penalty
        if not (math.isfinite(t) and 0.0 <= t <= MAX_TEMPERATURE):
            raise InvalidArgument(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE}, got {t}")
        if not 0 <= self.top_k <= vocab_size:
            raise InvalidArgument(
                f"top_k must be between 0 (off) and the vocabulary size {vocab_size}, got {self.top_k}"
            )
        if not (math.isfinite(p) and 0.0 < p <= 1.0):
            raise InvalidArgument(f"top_p must be in (0, 1] (1 turns it off), got {p}")
        if not (math.isfinite(r) and 0.0 < r <= MAX_PENALTY):
            raise InvalidArgument(f"repetition_penalty must be in (0, {MAX_PENALTY}] (1 turns it off), got {r}")
        if self.seed is None:
            return SamplingParams(t, self.top_k, p, r, secrets.randbits(63))
        return self


class Sampler:
    """Chooses the next token of one sequence from its logits row."""

    def __init__(self, params: SamplingParams, vocab_size: int, prompt: list[int], banned: list[int]) -> None:
        assert params.seed is not None, "validate the params first"
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._banned = np.array(banned, dtype=np.int64)
        self._seen = np.zeros(vocab_size, dtype=bool)
        if params.repetition_penalty != 1.0:
            self._seen[np.asarray(prompt, dtype=np.int64)] = True
        # temperature alone: rows like this one are drawn together (sample_rows)
        self.plain = (
            params.temperature > 0 and params.top_k == 0 and params.top_p == 1.0 and params.repetition_penalty == 1.0
        )

    def __call__(self, logits: np.ndarray) -> int:
        if self.plain:
            return _sample_plain([self], logits[np.newaxis])[0]
        p = self.params
        x = logits.astype(np.float64)  # (vocab,)
        if self._banned.size:
            x[self._banned] = -np.inf
        if p.repetition_penalty != 1.0:
            seen = x[self._seen]
            x[self._seen] = np.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        token = int(np.argmax(x)) if p.temperature == 0.0 else self._draw(x / p.temperature)
        if p.repetition_penalty != 1.0:
            self._seen[token] = True
        return token

    def _draw(self, x: np.ndarray) -> int:
        p = self.params
        if 0 < p.top_k < x.size:
            kth = np.partition(x, -p.top_k)[-p.top_k]
            x = np.where(x < kth, -np.inf, x)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            sorted_probs = probs[order]
            # keep the most probable tokens until their mass reaches top_p (at least one)
            keep = (np.cumsum(sorted_probs) - sorted_probs) < p.top_p
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        cdf = np.cumsum(probs)
        u = self._rng.random() * cdf[-1]
        return int(min(np.searchsorted(cdf, u, side="right"), probs.size - 1))


class ForcedTokens(Sampler):
    """Not a sampler: it answers each step with the text's next token (teacher forcing) and keeps the
    log-probability the model gave it. A scoring sequence (GeneratorModel.score) rides the decoding
    loop with it, batched with whatever else is generating."""

    def __init__(self, tokens: list[int]) -> None:
        self._tokens = tokens
        self.logprobs: list[float] = []
        self.plain = False

    def __call__(self, logits: np.ndarray) -> int:
        x = logits.astype(np.float64)  # (vocab,)
        token = self._tokens[len(self.logprobs)]
        top = x.max()
        self.logprobs.append(float(x[token] - top - np.log(np.exp(x - top).sum())))  # log_softmax
        return token


def sample_rows(samplers: list[Sampler], logits: np.ndarray) -> list[int]:
    """The next token of each row of logits (N, vocab), each by its own sampler."""
    plain = [i for i, sampler in enumerate(samplers) if sampler.plain]
    if len(plain) == len(samplers):
        return _sample_plain(samplers, logits)
    tokens = [0] * len(samplers)
    if plain:
        for i, token in zip(plain, _sample_plain([samplers[i] for i in plain], logits[plain]), strict=True):
            tokens[i] = token
    for i, sampler in enumerate(samplers):
        if not sampler.plain:
            tokens[i] = sampler(logits[i])
    return tokens


def _sample_plain(samplers: list[Sampler], logits: np.ndarray) -> list[int]:
    """Temperature sampling of N rows (N, vocab) at once: Sampler._draw's steps, row by row."""
    x = logits.astype(np.float64)  # (N, vocab)
    for row, sampler in enumerate(samplers):
        if sampler._banned.size:
            x[row, sampler._banned] = -np.inf
    x /= np.array([sampler.params.temperature for sampler in samplers])[:, np.newaxis]
    probs = np.exp(x - x.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    cdf = np.cumsum(probs, axis=1)
    u = np.array([sampler._rng.random() for sampler in samplers]) * cdf[:, -1]  # one draw per row
    # searchsorted(cdf, u, side="right") per row: how many cumulative values are <= u
    tokens = np.minimum((cdf <= u[:, np.newaxis]).sum(axis=1), x.shape[1] - 1)
    return [int(t) for t in tokens]
