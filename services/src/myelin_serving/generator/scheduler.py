"""Continuous batching: one decoding loop per model version, shared by every request.

Each iteration of the loop:
1. drops sequences that finished, were cancelled (the caller went away) or passed their deadline,
   so a cancelled sequence leaves the batch within one step;
2. prefills the prompts that arrived since the last step (together, in one graph call), samples
   their first token and appends their caches to the batch;
3. runs ONE decoding step for every active sequence together (their last token in, next-token
   logits out) and lets each sequence sample its next token with its own sampler.

Sequences therefore join and leave between steps and never wait for each other to finish.
Decoding steps run ON the event loop thread, then the loop yields so the requests can send what
was produced: a step is a millisecond or two, and on this 2-core machine handing steps to a worker
thread (onnxruntime releases the GIL, so the event loop could send one step's tokens while the
next computes) cost more than it overlapped. Measured under the CPU lock: one stream 1,124 tokens/s
through the worker against 1,611 inline, 8 streams 2,510 against 3,402 (2 intra-op threads).
`inline_rows` (default: every step) keeps the worker path for machines where it pays. Prefills,
which can be long, run on the worker thread. Each sequence's output goes into its own queue, read
by the request that owns it.

The loop knows nothing of gRPC, tokenizers or sampling rules: it drives a `CacheBatch` and asks
each `Sequence` to `advance(logits_row)`. A beam-search decoder (several rows per request) could
reuse it with a Sequence that owns several rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from myelin_serving.errors import DeadlineExceeded, Overloaded, Unavailable
from myelin_serving.generator.cache import CacheBatch
from myelin_serving.metrics import Metrics

log = logging.getLogger(__name__)

LENGTH, STOP, CANCELLED = "length", "stop", "cancelled"


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


@dataclass(eq=False)
class Sequence:
    """One request's generation. `advance` is called by the loop with each next-token logits row.

    `pick(logits) -> token` chooses the token; `emit(token) -> (text, stop_sequence or None)`
    turns it into releasable text; `finish_text()` flushes what is held back at the end.
    """

    prompt: list[int]
    max_new_tokens: int
    seed: int
    pick: Callable[[np.ndarray], int]
    emit: Callable[[int], tuple[str, str | None]]
    finish_text: Callable[[], str]
    deadline: float | None = None  # time.monotonic()
    generated: list[int] = field(default_factory=list)
    queue: asyncio.Queue[Chunk | BaseException] = field(default_factory=asyncio.Queue)
    done: bool = False
    submitted: float = 0.0
    last_token_at: float = 0.0
    outcome: str = ""  # why it left: length, stop, cancelled, deadline, error

    @property
    def last(self) -> int:
        return self.generated[-1]

    def advance(self, logits: np.ndarray) -> None:
        token = self.pick(logits)
        self.generated.append(token)
        text, stop = self.emit(token)
        if stop is not None:
            self._finish(Chunk(text, [token]), STOP, stop)
        elif len(self.generated) >= self.max_new_tokens:
            self._finish(Chunk(text + self.finish_text(), [token]), LENGTH)
        else:
            self.queue.put_nowait(Chunk(text, [token]))

    def cancel(self, reason: str = CANCELLED) -> None:
        """The caller went away (or the service stops it): no more steps for this sequence."""
        if not self.done:
            self.done, self.outcome = True, reason
            if reason == CANCELLED:
                self.queue.put_nowait(Chunk(self.finish_text(), [], self._summary(CANCELLED)))

    def fail(self, error: BaseException, outcome: str) -> None:
        if not self.done:
            self.done, self.outcome = True, outcome
            self.queue.put_nowait(error)

    def _finish(self, chunk: Chunk, reason: str, stop: str = "") -> None:
        chunk.finish = self._summary(reason, stop)
        self.done, self.outcome = True, reason
        self.queue.put_nowait(chunk)

    def _summary(self, reason: str, stop: str = "") -> Finish:
        return Finish(reason, len(self.prompt), len(self.generated), self.seed, stop)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The output as it comes; chunks that queued up meanwhile are merged into one."""
        while True:
            item = await self.queue.get()
            while isinstance(item, Chunk) and item.finish is None and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if isinstance(nxt, BaseException):
                    yield item
                    item = nxt
                    break
                item = Chunk(item.text + nxt.text, item.token_ids + nxt.token_ids, nxt.finish)
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish is not None:
                return


class DecodeLoop:
    """The continuous-batching loop of one model version."""

    def __init__(
        self,
        batch: CacheBatch,
        *,
        model: str,
        version: int,
        max_sequences: int,
        inline_rows: int = 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self._batch = batch
        self._model, self._version = model, version
        self._max_sequences = max_sequences
        self._inline_rows = inline_rows  # steps of at most this many rows run on the event loop
        self._metrics = metrics
        self._per_step = None if metrics is None else _StepMetrics(metrics, model)
        self._waiting: list[Sequence] = []
        self._active: list[Sequence] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{model}")
        self._task = asyncio.create_task(self._run(), name=f"decode-loop-{model}-{version}")

    @property
    def sequences(self) -> int:
        return len(self._waiting) + len(self._active)

    def submit(self, sequence: Sequence) -> None:
        if self._closing:
            raise Unavailable(f"model {self._model} version {self._version} is being unloaded; retry")
        if self.sequences >= self._max_sequences:
            self._count(sequence, "rejected")
            raise Overloaded(
                f"model {self._model} is already generating {self.sequences} sequences (max_sequences "
                f"{self._max_sequences}); retry with backoff"
            )
        sequence.submitted = time.monotonic()
        self._waiting.append(sequence)
        if self._metrics is not None:
            self._metrics.generator_active.labels(self._model).inc()
            self._metrics.generator_prompt_tokens.labels(self._model).inc(len(sequence.prompt))
        self._wakeup.set()

    def cancel(self, sequence: Sequence) -> None:
        if not sequence.done:
            sequence.cancel()
            self._wakeup.set()

    async def close(self, drain_timeout: float) -> None:
        """Refuse new sequences, let the running ones finish (up to drain_timeout), cancel the rest."""
        self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
        except TimeoutError:
            for sequence in [*self._waiting, *self._active]:
                sequence.cancel()
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._reap()
            if not self._waiting and not self._active:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                if self._waiting:
                    await self._prefill(loop)
                    self._reap()
                if self._active:
                    await self._step(loop)
            except Exception as exc:  # a broken graph must not take the loop down with it
                log.exception("decoding step of %s/%s failed", self._model, self._version)
                for sequence in [*self._waiting, *self._active]:
                    sequence.fail(exc, "error")

    async def _prefill(self, loop: asyncio.AbstractEventLoop) -> None:
        new = list(self._waiting)  # stay in _waiting until they join: a failure there fails them
        logits, rows = await loop.run_in_executor(self._executor, self._batch.prefill, [s.prompt for s in new])
        self._waiting = self._waiting[len(new) :]  # keep those that arrived during the prefill
        self._batch.join(rows)
        self._active.extend(new)
        now = time.monotonic()
        for sequence, row in zip(new, logits, strict=True):
            if sequence.done:  # cancelled while its prompt ran
                continue
            sequence.advance(row)
            sequence.last_token_at = now
            if self._metrics is not None:
                self._metrics.generator_ttft.labels(self._model).observe(now - sequence.submitted)
                self._metrics.generated_tokens.labels(self._model).inc()

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        active = self._active
        tokens = np.fromiter((s.last for s in active), dtype=np.int64, count=len(active))  # (B,)
        started = time.perf_counter()
        inline = len(active) <= self._inline_rows
        if inline:  # see the module docstring
            logits = self._batch.step(tokens)
        else:
            logits = await loop.run_in_executor(self._executor, self._batch.step, tokens)
        now = time.monotonic()
        produced = 0
        itl = None if self._per_step is None else self._per_step.itl
        for sequence, row in zip(active, logits, strict=True):
            if sequence.done:  # cancelled or expired during the step
                continue
            sequence.advance(row)
            produced += 1
            if itl is not None:
                itl.observe(now - sequence.last_token_at)
            sequence.last_token_at = now
        if self._per_step is not None:
            self._per_step.observe(time.perf_counter() - started, len(active), produced)
        if inline:
            await asyncio.sleep(0)  # let the requests send their tokens before the next step

    def _reap(self) -> None:
        """Drop finished, cancelled and expired sequences from the batch (between steps)."""
        now = time.monotonic()
        for sequence in [*self._waiting, *self._active]:
            if not sequence.done and sequence.deadline is not None and now >= sequence.deadline:
                sequence.fail(DeadlineExceeded("the deadline passed while generating"), "deadline")
        if not any(s.done for s in self._waiting) and not any(s.done for s in self._active):
            return  # the common case between two steps: nothing to drop
        waiting = [s for s in self._waiting if not s.done]
        keep = [i for i, s in enumerate(self._active) if not s.done]
        for sequence in [s for s in self._waiting if s.done] + [s for s in self._active if s.done]:
            self._count(sequence, sequence.outcome)
            if self._metrics is not None:
                self._metrics.generator_active.labels(self._model).dec()
        self._waiting = waiting
        if len(keep) != len(self._active):
            self._batch.keep(keep)
            self._active = [self._active[i] for i in keep]

    def _count(self, sequence: Sequence, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.generator_sequences.labels(self._model, outcome).inc()


class _StepMetrics:
    """The per-step metrics with their `model` label bound once (a labels() lookup per token adds up)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.itl = metrics.generator_itl.labels(model)
        self._duration = metrics.generator_step_duration.labels(model)
        self._batch = metrics.generator_step_batch.labels(model)
        self._tokens = metrics.generated_tokens.labels(model)

    def observe(self, seconds: float, rows: int, produced: int) -> None:
        self._duration.observe(seconds)
        self._batch.observe(rows)
        self._tokens.inc(produced)
