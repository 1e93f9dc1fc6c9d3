"""The step loop: every sentence in flight, from every request, shares one decoder call per step.

    pending sentences ──admit──▶ one encoder call for all admitted ──join──▶ ActiveBatch
    ActiveBatch ──one decoder step (all rows)──▶ each sentence's BeamSearch ──▶ finished sentences leave

Between steps, on the event loop: sentences whose caller went away or whose deadline passed leave
the batch, and queued sentences are admitted while the rows they may need (beam_size each) fit
under `max_active_rows`. The step itself (encoder, decoder, searches, cache gathers) runs in one
worker thread, so the event loop stays free to accept requests. A request is answered when all of
its sentences are done.

Sequence models with a key/value cache plug in through `StepGraphs`: the generator family's
decoder-only loop has the same shape (no encoder, a prompt instead of a source).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from myelin_serving.devices import HOST, Tensors
from myelin_serving.errors import DeadlineExceeded, Overloaded, Unavailable
from myelin_serving.translator.batch import ActiveBatch, Job
from myelin_serving.translator.metrics import TranslatorMetrics
from myelin_serving.translator.search import BeamSearch, Hypothesis, SearchOptions

log = logging.getLogger(__name__)


class StepGraphs(Protocol):
    """What the loop runs: an encoder over padded sources, and one decoder step over all rows."""

    def encode(self, source_ids: np.ndarray, source_mask: np.ndarray) -> tuple[Any, Any]:
        """(n, S) ids and mask -> cross keys and values (n, L, H, S, Dh), as the loop's tensors."""
        ...

    def decode(self, feeds: dict[str, Any]) -> tuple[np.ndarray, Any, Any]:
        """ActiveBatch.feeds() -> log_probs (N, V) on the host, present keys and values (N, L, H, P + 1, Dh)."""
        ...


@dataclass(frozen=True)
class LoopConfig:
    layers: int
    heads: int
    head_dim: int
    bos_id: int
    eos_id: int
    pad_id: int
    max_active_rows: int  # hypotheses in one decoder step, all requests together
    max_pending: int  # sentences waiting to be admitted; more are refused with Overloaded


@dataclass(eq=False)
class _Ticket:
    future: asyncio.Future[Hypothesis]
    deadline: float | None  # loop time
    request: int  # which request the sentence belongs to (metrics: requests per step)
    rows: int  # rows reserved while active (beam_size)


class DecodeLoop:
    def __init__(
        self,
        graphs: StepGraphs,
        config: LoopConfig,
        *,
        model: str,
        metrics: TranslatorMetrics | None = None,
        tensors: Tensors[Any] = HOST,
    ) -> None:
        self._graphs = graphs
        self.config = config
        self._model = model
        self._metrics = metrics
        self._tensors = tensors  # what the graphs' caches are: ActiveBatch works on them
        self._batch = self._empty_batch()
        self._pending: deque[Job] = deque()
        self._reserved = 0  # rows reserved by active sentences
        self._wakeup = asyncio.Event()
        self._closing = False
        self._requests = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{model}")
        self._task = asyncio.create_task(self._run(), name=f"decode-loop-{model}")

    async def translate(
        self, items: Sequence[tuple[np.ndarray, SearchOptions]], *, timeout: float | None
    ) -> list[Hypothesis]:
        """Search every (source ids with EOS, options); the best hypothesis of each, in order."""
        if self._closing:
            raise Unavailable(f"model {self._model} is being unloaded; retry")
        if timeout is not None and timeout <= 0:
            self._reject("deadline")
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        if len(self._pending) + len(items) > self.config.max_pending:
            self._reject("queue_full")
            raise Overloaded(
                f"model {self._model} has {len(self._pending)} sentences queued (max {self.config.max_pending}); "
                "retry with backoff"
            )
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._requests += 1
        jobs = []
        for source, options in items:
            search = BeamSearch(options, eos_id=self.config.eos_id, banned=(self.config.pad_id, self.config.bos_id))
            ticket = _Ticket(loop.create_future(), deadline, self._requests, options.beam_size)
            jobs.append(Job(source, search, ticket))
        self._pending.extend(jobs)
        self._gauge_pending(len(jobs))
        self._wakeup.set()
        futures = [job.owner.future for job in jobs]
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # the others leave at the next step
                future.cancel()
            raise

    async def close(self) -> None:
        """Finish every sentence already queued or in flight, then stop."""
        self._closing = True
        self._wakeup.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._executor.shutdown(wait=True)

    @property
    def active_rows(self) -> int:
        return self._batch.rows

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and not self._batch.jobs:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            admitted = self._admit(loop.time())
            if not admitted and not self._batch.jobs:
                continue
            try:
                finished = await loop.run_in_executor(self._executor, self._step, admitted)
            except Exception as exc:  # a graph failed: fail every sentence in flight, keep serving
                log.exception("decoder step failed for model %s", self._model)
                failed = {id(job): job for job in [*self._batch.jobs, *admitted]}.values()
                self._batch = self._empty_batch()
                self._reserved = 0
                for job in failed:
                    if not job.owner.future.done():
                        job.owner.future.set_exception(exc)
                continue
            self._release(finished)
            for job in finished:
                if not job.owner.future.done():
                    best = job.search.best()
                    job.owner.future.set_result(best)
                    if self._metrics is not None:
                        self._metrics.generated_tokens.labels(self._model).inc(best.length)
                        self._metrics.inferences.labels(self._model).inc()

    def _admit(self, now: float) -> list[Job]:
        """On the event loop, between steps: drop dead sentences, admit queued ones that fit."""

        def dead(job: Job) -> bool:
            ticket: _Ticket = job.owner
            if ticket.future.done():
                return True
            if ticket.deadline is not None and now >= ticket.deadline:
                self._reject("deadline")
                ticket.future.set_exception(DeadlineExceeded("the request's deadline passed during decoding"))
                return True
            return False

        self._release(self._batch.remove(dead))
        admitted: list[Job] = []
        while self._pending:
            job = self._pending[0]
            ticket: _Ticket = job.owner
            if dead(job):
                self._pending.popleft()
                self._gauge_pending(-1)
                continue
            if self._reserved + ticket.rows > self.config.max_active_rows:
                break
            self._pending.popleft()
            self._gauge_pending(-1)
            self._reserved += ticket.rows
            admitted.append(job)
        return admitted

    def _step(self, admitted: list[Job]) -> list[Job]:
        """In the worker thread: encode the admitted sentences, join them, run one decoder step."""
        if admitted:
            width = max(len(job.source) for job in admitted)
            source_ids = np.full((len(admitted), width), self.config.pad_id, dtype=np.int64)
            for i, job in enumerate(admitted):
                source_ids[i, : len(job.source)] = job.source
            source_mask = source_ids != self.config.pad_id
            cross_keys, cross_values = self._graphs.encode(source_ids, source_mask)
            self._batch.join(admitted, cross_keys, cross_values, source_mask)
        feeds = self._batch.feeds()
        log_probs, present_keys, present_values = self._graphs.decode(feeds)
        if self._metrics is not None:
            requests = len({job.owner.request for job in self._batch.jobs})
            self._metrics.decode_steps.labels(self._model).inc()
            self._metrics.decode_step_rows.labels(self._model).observe(self._batch.rows)
            self._metrics.decode_step_requests.labels(self._model).observe(requests)
        finished = self._batch.advance(log_probs, present_keys, present_values)
        if self._metrics is not None:
            self._metrics.decode_active_rows.labels(self._model).set(self._batch.rows)
        return finished

    def _empty_batch(self) -> ActiveBatch:
        c = self.config
        return ActiveBatch(c.layers, c.heads, c.head_dim, bos_id=c.bos_id, tensors=self._tensors)

    def _release(self, jobs: Sequence[Job]) -> None:
        self._reserved -= sum(job.owner.rows for job in jobs)

    def _gauge_pending(self, delta: int) -> None:
        if self._metrics is not None and delta:
            self._metrics.queue_depth.labels(self._model).inc(delta)

    def _reject(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejections.labels(self._model, reason).inc()
