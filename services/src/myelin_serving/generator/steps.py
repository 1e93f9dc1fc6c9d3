"""The generator on the step engine (engine.py): sequences, and the step that samples their tokens.

Continuous batching: every sequence being generated, from every request, shares one step graph
call per token. `GeneratorSteps.join` prefills the prompts that arrived since the last step
(together, in one graph call), samples their first token and appends their caches to the batch;
`step` runs ONE decoding step for every active sequence together (their last token in, next-token
logits out) and lets each sequence sample its next token with its own sampler. The engine's thread
drops finished, cancelled and expired sequences between steps and wakes their readers.

This module knows nothing of gRPC or tokenizers: it drives a `CacheBatch`, has a step's tokens
drawn by `sample_rows` (each row by its own sampler) and hands each `Sequence` its token with
`advance(token)`, which turns it into text through the request's callbacks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np

from myelin_serving.engine import CANCELLED, StepEngine, Work
from myelin_serving.errors import Overloaded
from myelin_serving.generator.cache import CacheBatch
from myelin_serving.generator.metrics import GeneratorMetrics
from myelin_serving.generator.sampling import Sampler, sample_rows

LENGTH, STOP = "length", "stop"


@dataclass(frozen=True)
class Finish:
    reason: str  # length | stop | cancelled
    prompt_tokens: int
    generated_tokens: int
    seed: int
    stop_sequence: str = ""


@dataclass
class Chunk:
    """What a request receives: new text and tokens, and on the last chunk, `finish`."""

    text: str
    token_ids: list[int]
    finish: Finish | None = None


@dataclass(eq=False, kw_only=True)
class Sequence(Work):
    """One request's generation. `advance` is called by the engine's thread with each token.

    `sampler` chooses the token (a step's rows are sampled together, `sample_rows`);
    `emit(token) -> (text, stop_sequence or None)` turns it into releasable text;
    `finish_text()` flushes what is held back at the end. `chunks()` reads the output.
    """

    prompt: list[int]
    max_new_tokens: int
    seed: int
    sampler: Sampler
    emit: Callable[[int], tuple[str, str | None]]
    finish_text: Callable[[], str]
    generated: list[int] = field(default_factory=list)
    last_token_at: float = 0.0

    @property
    def last(self) -> int:
        return self.generated[-1] if self.generated else 0

    def advance(self, token: int) -> None:
        """The next token, sampled by the engine's thread (the sampler is that thread's alone)."""
        with self._lock:
            if self.done:  # cancelled while this step ran
                return
            self.generated.append(token)
            text, stop = self.emit(token)
            if stop is not None:
                self._finish(Chunk(text, [token]), STOP, stop)
            elif len(self.generated) >= self.max_new_tokens:
                self._finish(Chunk(text + self.finish_text(), [token]), LENGTH)
            else:
                self.outbox.append(Chunk(text, [token]))

    def farewell(self, reason: str) -> Chunk | None:
        return Chunk(self.finish_text(), [], self._summary(CANCELLED)) if reason == CANCELLED else None

    def _finish(self, chunk: Chunk, reason: str, stop: str = "") -> None:
        chunk.finish = self._summary(reason, stop)
        self.done, self.outcome = True, reason
        self.outbox.append(chunk)

    def _summary(self, reason: str, stop: str = "") -> Finish:
        return Finish(reason, len(self.prompt), len(self.generated), self.seed, stop)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The output as it comes; chunks that queued up meanwhile are merged into one."""
        while True:
            item: Chunk = await self.next()
            while item.finish is None and self.outbox:
                nxt = self.outbox[0]
                if isinstance(nxt, BaseException):
                    break  # raised by the next call to next()
                self.outbox.popleft()
                item = Chunk(item.text + nxt.text, item.token_ids + nxt.token_ids, nxt.finish)
            yield item
            if item.finish is not None:
                return


class GeneratorSteps:
    """The continuous batching of one model version: its CacheBatch stepped by a StepEngine."""

    def __init__(
        self,
        batch: CacheBatch,
        *,
        model: str,
        version: int,
        max_sequences: int,
        stream_interval: float = 0.0,
        metrics: GeneratorMetrics | None = None,
    ) -> None:
        self._batch = batch
        self._model = model
        self._max_sequences = max_sequences
        self._metrics = metrics
        self._per_step = None if metrics is None else _StepMetrics(metrics, model)
        self.engine = StepEngine(self, name=f"{model} version {version}", stream_interval=stream_interval)

    def submit(self, sequence: Sequence) -> None:
        """On the event loop: queue the sequence for the next step, or refuse it (Unavailable, Overloaded)."""
        live = self.engine.live
        if live >= self._max_sequences and not self.engine.closing:
            self._count(sequence, "rejected")
            raise Overloaded(
                f"model {self._model} is already generating {live} sequences (max_sequences "
                f"{self._max_sequences}); retry with backoff"
            )
        self.engine.submit([sequence])
        if self._metrics is not None:
            self._metrics.generator_active.labels(self._model).inc()
            self._metrics.generator_prompt_tokens.labels(self._model).inc(len(sequence.prompt))

    def cancel(self, sequence: Sequence) -> None:
        self.engine.cancel(sequence)

    async def close(self, drain_timeout: float) -> None:
        await self.engine.close(drain_timeout)

    # --- the StepModel, on the engine's thread -------------------------------------------------

    def join(self, new: list[Sequence]) -> list[Sequence]:
        """Prefill the new prompts together and sample their first tokens."""
        logits, rows = self._batch.prefill([s.prompt for s in new])
        self._batch.join(rows)
        now = time.monotonic()
        for sequence, token in zip(new, sample_rows([s.sampler for s in new], logits), strict=True):
            sequence.advance(token)
            sequence.last_token_at = now
            if self._metrics is not None and sequence.generated:
                self._metrics.generator_ttft.labels(self._model).observe(now - sequence.submitted)
                self._metrics.generated_tokens.labels(self._model).inc()
        return new

    def step(self, active: list[Sequence]) -> list[Sequence]:
        tokens = np.fromiter((s.last for s in active), dtype=np.int64, count=len(active))  # (B,)
        started = time.perf_counter()
        logits = self._batch.step(tokens)
        now = time.monotonic()
        produced = 0
        itl = None if self._per_step is None else self._per_step.itl
        live = [i for i, s in enumerate(active) if not s.done]  # not cancelled or expired meanwhile
        if len(live) < len(active):
            logits = logits[live]
        for i, token in zip(live, sample_rows([active[i].sampler for i in live], logits), strict=True):
            sequence = active[i]
            sequence.advance(token)
            produced += 1
            if itl is not None:
                itl.observe(now - sequence.last_token_at)
            sequence.last_token_at = now
        if self._per_step is not None:
            self._per_step.observe(time.perf_counter() - started, len(active), produced)
        return active

    def keep(self, indices: list[int]) -> None:
        self._batch.keep(indices)

    def left(self, gone: list[Sequence]) -> None:
        for sequence in gone:
            self._count(sequence, sequence.outcome)
            if self._metrics is not None:
                self._metrics.generator_active.labels(self._model).dec()

    def _count(self, sequence: Sequence, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.generator_sequences.labels(self._model, outcome).inc()


class _StepMetrics:
    """The per-step metrics with their `model` label bound once (a labels() lookup per token adds up)."""

    def __init__(self, metrics: GeneratorMetrics, model: str) -> None:
        self.itl = metrics.generator_itl.labels(model)
        self._duration = metrics.generator_step_duration.labels(model)
        self._batch = metrics.generator_step_batch.labels(model)
        self._tokens = metrics.generated_tokens.labels(model)

    def observe(self, seconds: float, rows: int, produced: int) -> None:
        self._duration.observe(seconds)
        self._batch.observe(rows)
        self._tokens.inc(produced)
