"""Continuous batching: one decoding thread per model version, shared by every request.

Each iteration of the thread's loop:
1. drops sequences that finished, were cancelled (the caller went away) or passed their deadline,
   so a cancelled sequence leaves the batch within one step;
2. prefills the prompts that arrived since the last step (together, in one graph call), samples
   their first token and appends their caches to the batch;
3. runs ONE decoding step for every active sequence together (their last token in, next-token
   logits out) and lets each sequence sample its next token with its own sampler.

Sequences therefore join and leave between steps and never wait for each other to finish.

The loop runs on its own thread, not on the event loop: onnxruntime releases the GIL while a
step computes, so the event loop sends one step's tokens (gRPC writes, the client's side of the
machine) while the next step runs, and the steps never wait for the sends. Each sequence's output
goes into its own deque; after each step the thread asks the event loop, with at most one pending
`call_soon_threadsafe`, to wake the requests that have new output, and a request that wakes to
several tokens sends them as one message. (Earlier designs measured under the CPU lock: steps
inline on the event loop, 1 stream 1,611 tokens/s; each step awaited on a worker through
`run_in_executor`, 1,124: the hand-off in and out of the event loop at every step cost more
than the overlap gained.)

The loop knows nothing of gRPC, tokenizers or sampling rules: it drives a `CacheBatch`, has a
step's tokens drawn by `sample_rows` (each row by its own sampler) and hands each `Sequence` its
token with `advance(token)`. A beam-search decoder (several rows per request) could
reuse it with a Sequence that owns several rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from myelin_serving.errors import DeadlineExceeded, Overloaded, Unavailable
from myelin_serving.generator.cache import CacheBatch
from myelin_serving.generator.metrics import GeneratorMetrics
from myelin_serving.generator.sampling import Sampler, sample_rows

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
    """One request's generation. `advance` is called by the decoding thread with each logits row.

    `sampler` chooses the token (the loop samples a step's rows together, `sample_rows`);
    `emit(token) -> (text, stop_sequence or None)`
    turns it into releasable text; `finish_text()` flushes what is held back at the end. Output
    goes into `outbox` (from either thread; a lock makes finishing happen once), and `chunks()`
    reads it on the event loop, woken through `ready`.
    """

    prompt: list[int]
    max_new_tokens: int
    seed: int
    sampler: Sampler
    emit: Callable[[int], tuple[str, str | None]]
    finish_text: Callable[[], str]
    deadline: float | None = None  # time.monotonic()
    generated: list[int] = field(default_factory=list)
    outbox: deque[Chunk | BaseException] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set on the event loop only
    done: bool = False
    submitted: float = 0.0
    last_token_at: float = 0.0
    outcome: str = ""  # why it left: length, stop, cancelled, deadline, error
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def last(self) -> int:
        return self.generated[-1] if self.generated else 0

    def advance(self, token: int) -> None:
        """The next token, sampled by the decoding thread (the sampler is that thread's alone)."""
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

    def cancel(self, reason: str = CANCELLED) -> None:
        """The caller went away (or the service stops it): no more steps for this sequence."""
        with self._lock:
            if not self.done:
                self.done, self.outcome = True, reason
                if reason == CANCELLED:
                    self.outbox.append(Chunk(self.finish_text(), [], self._summary(CANCELLED)))

    def fail(self, error: BaseException, outcome: str) -> None:
        with self._lock:
            if not self.done:
                self.done, self.outcome = True, outcome
                self.outbox.append(error)

    def _finish(self, chunk: Chunk, reason: str, stop: str = "") -> None:
        chunk.finish = self._summary(reason, stop)
        self.done, self.outcome = True, reason
        self.outbox.append(chunk)

    def _summary(self, reason: str, stop: str = "") -> Finish:
        return Finish(reason, len(self.prompt), len(self.generated), self.seed, stop)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The output as it comes; chunks that queued up meanwhile are merged into one."""
        while True:
            if not self.outbox:
                # Clearing then waiting is safe: output that lands in between comes with a
                # wake-up that runs on this event loop after this coroutine suspends.
                self.ready.clear()
                await self.ready.wait()
                continue
            item = self.outbox.popleft()
            while isinstance(item, Chunk) and item.finish is None and self.outbox:
                nxt = self.outbox.popleft()
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
    """The continuous-batching loop of one model version, on its own thread."""

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
        self._stream_interval = stream_interval  # seconds between wake-ups of the readers, at least
        self._model, self._version = model, version
        self._max_sequences = max_sequences
        self._metrics = metrics
        self._per_step = None if metrics is None else _StepMetrics(metrics, model)
        self._event_loop = asyncio.get_running_loop()
        self._lock = threading.Lock()  # guards _waiting, _live and _closing
        self._waiting: list[Sequence] = []  # submitted, not yet taken by the thread
        self._live = 0  # submitted and not yet dropped: what max_sequences bounds
        self._closing = False
        self._abort = False  # set by close() after the drain timeout
        self._wakeup = threading.Event()
        self._active: list[Sequence] = []  # the batch's rows, in order; the thread's alone
        self._to_wake: deque[Sequence] = deque()  # sequences with new output, for the event loop
        self._wake_pending = False
        self._last_wake = 0.0
        self._stopped: asyncio.Future[None] = self._event_loop.create_future()
        self._thread = threading.Thread(target=self._run, name=f"decode-{model}-{version}", daemon=True)
        self._thread.start()

    @property
    def sequences(self) -> int:
        return self._live

    def submit(self, sequence: Sequence) -> None:
        with self._lock:
            if self._closing:
                raise Unavailable(f"model {self._model} version {self._version} is being unloaded; retry")
            if self._live >= self._max_sequences:
                self._count(sequence, "rejected")
                raise Overloaded(
                    f"model {self._model} is already generating {self._live} sequences (max_sequences "
                    f"{self._max_sequences}); retry with backoff"
                )
            self._live += 1
            sequence.submitted = time.monotonic()
            self._waiting.append(sequence)
        if self._metrics is not None:
            self._metrics.generator_active.labels(self._model).inc()
            self._metrics.generator_prompt_tokens.labels(self._model).inc(len(sequence.prompt))
        self._wakeup.set()

    def cancel(self, sequence: Sequence) -> None:
        """On the event loop: the caller went away. The thread drops the row before its next step."""
        if not sequence.done:
            sequence.cancel()
            sequence.ready.set()
            self._wakeup.set()

    async def close(self, drain_timeout: float) -> None:
        """Refuse new sequences, let the running ones finish (up to drain_timeout), cancel the rest."""
        with self._lock:
            self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), drain_timeout)
        except TimeoutError:
            self._abort = True  # the thread cancels every sequence it holds, then stops
            self._wakeup.set()
            await self._stopped

    # --- the decoding thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wakeup.clear()  # before looking: a submit after this sets it again
                with self._lock:
                    new, self._waiting = self._waiting, []
                    closing = self._closing
                new = self._reap(new)
                if not new and not self._active:
                    if closing:
                        return
                    self._wakeup.wait()
                    continue
                try:
                    if new:
                        self._prefill(new)
                        self._reap([])
                    if self._active:
                        self._step()
                except Exception as exc:  # a broken graph must not take the loop down with it
                    log.exception("decoding step of %s/%s failed", self._model, self._version)
                    for sequence in [*new, *self._active]:
                        sequence.fail(exc, "error")
                    self._wake([*new, *self._active], urgent=True)
                    self._active.extend(s for s in new if s not in self._active)
                    self._reap([])
        finally:
            with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting
                self._event_loop.call_soon_threadsafe(self._stopped.set_result, None)

    def _prefill(self, new: list[Sequence]) -> None:
        logits, rows = self._batch.prefill([s.prompt for s in new])
        self._batch.join(rows)
        self._active.extend(new)
        now = time.monotonic()
        for sequence, token in zip(new, sample_rows([s.sampler for s in new], logits), strict=True):
            sequence.advance(token)
            sequence.last_token_at = now
            if self._metrics is not None and sequence.generated:
                self._metrics.generator_ttft.labels(self._model).observe(now - sequence.submitted)
                self._metrics.generated_tokens.labels(self._model).inc()
        self._wake(new, urgent=True)  # first tokens go out at once

    def _step(self) -> None:
        active = self._active
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
        self._wake(active, urgent=any(s.done for s in active))  # last tokens go out at once
        if self._per_step is not None:
            self._per_step.observe(time.perf_counter() - started, len(active), produced)

    def _wake(self, sequences: Iterable[Sequence], *, urgent: bool = False) -> None:
        """Ask the event loop to wake these sequences' readers: one call in flight at most, and
        unless `urgent`, none sooner than the stream interval after the last (the sequences wait
        in `_to_wake` for the next one; a step that finishes any sequence is urgent)."""
        self._to_wake.extend(sequences)
        now = time.monotonic()
        if not self._wake_pending and (urgent or now - self._last_wake >= self._stream_interval):
            self._wake_pending, self._last_wake = True, now
            with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is reading
                self._event_loop.call_soon_threadsafe(self._wake_readers)

    def _wake_readers(self) -> None:  # on the event loop
        self._wake_pending = False  # first: output added from now on schedules another call
        while self._to_wake:
            self._to_wake.popleft().ready.set()

    def _reap(self, new: list[Sequence]) -> list[Sequence]:
        """Drop finished, cancelled and expired sequences (between steps); return the new ones kept."""
        if self._abort:
            for sequence in [*new, *self._active]:
                sequence.cancel()
            self._wake([*new, *self._active], urgent=True)
        now = time.monotonic()
        expired = [s for s in [*new, *self._active] if not s.done and s.deadline is not None and now >= s.deadline]
        for sequence in expired:
            sequence.fail(DeadlineExceeded("the deadline passed while generating"), "deadline")
        self._wake(expired, urgent=bool(expired))
        if not any(s.done for s in new) and not any(s.done for s in self._active):
            return new  # the common case between two steps: nothing to drop
        keep = [i for i, s in enumerate(self._active) if not s.done]
        gone = [s for s in new if s.done] + [s for s in self._active if s.done]
        for sequence in gone:
            self._count(sequence, sequence.outcome)
            if self._metrics is not None:
                self._metrics.generator_active.labels(self._model).dec()
        with self._lock:
            self._live -= len(gone)
        if len(keep) != len(self._active):
            self._batch.keep(keep)
            self._active = [self._active[i] for i in keep]
        return [s for s in new if not s.done]

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
