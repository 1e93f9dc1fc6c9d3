"""The translator on the step engine (engine.py): every sentence in flight shares one decoder call per step.

    queued sentences ──admit──▶ one encoder call for all admitted ──join──▶ ActiveBatch
    ActiveBatch ──one decoder step (all rows)──▶ each sentence's BeamSearch ──▶ finished sentences leave

The engine's thread admits queued sentences while the rows they may need (beam_size each) fit
under `max_active_rows`, drops those whose caller went away or whose deadline passed, and runs
the steps; the event loop only queues sentences and reads their answers. A request is answered
when all of its sentences are done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from myelin_serving.devices import HOST, Tensors
from myelin_serving.engine import StepEngine, Work
from myelin_serving.errors import DeadlineExceeded, Overloaded, Unavailable
from myelin_serving.translator.batch import ActiveBatch, Job
from myelin_serving.translator.metrics import TranslatorMetrics
from myelin_serving.translator.search import BeamSearch, Hypothesis, SearchOptions

FINISHED = "finished"


class StepGraphs(Protocol):
    """What a step runs: an encoder over padded sources, and one decoder step over all rows."""

    def encode(self, source_ids: np.ndarray, source_mask: np.ndarray) -> tuple[Any, Any]:
        """(n, S) ids and mask -> cross keys and values (n, L, H, S, Dh), as the steps' tensors."""
        ...

    def decode(self, feeds: dict[str, Any]) -> tuple[np.ndarray, Any, Any]:
        """ActiveBatch.feeds() -> log_probs (N, V) on the host, present keys and values (N, L, H, P + 1, Dh)."""
        ...


@dataclass(frozen=True)
class StepConfig:
    layers: int
    heads: int
    head_dim: int
    bos_id: int
    eos_id: int
    pad_id: int
    max_active_rows: int  # hypotheses in one decoder step, all requests together
    max_pending: int  # sentences waiting to be admitted; more are refused with Overloaded


@dataclass(eq=False, kw_only=True)
class Sentence(Work):
    """One sentence of a request: its Job in the batch; its output is its ranked Hypotheses, best first."""

    EXPIRED: ClassVar[str] = "the request's deadline passed during decoding"

    job: Job
    request: int  # which request it belongs to (metrics: requests per step)

    def farewell(self, reason: str) -> Unavailable:
        return Unavailable("the translator stopped decoding (the model is being unloaded); retry")


class TranslatorSteps:
    """The beam searches of one model version, stepped together by a StepEngine."""

    def __init__(
        self,
        graphs: StepGraphs,
        config: StepConfig,
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
        self._requests = 0
        self.engine = StepEngine(self, name=model, max_rows=config.max_active_rows)

    async def translate(
        self, items: Sequence[tuple[np.ndarray, SearchOptions]], *, timeout: float | None
    ) -> list[Hypothesis]:
        """Search every (source ids with EOS, options); the best hypothesis of each, in order."""
        return [ranked[0] for ranked in await self.search(items, timeout=timeout)]

    async def search(
        self, items: Sequence[tuple[np.ndarray, SearchOptions]], *, timeout: float | None
    ) -> list[list[Hypothesis]]:
        """Search every (source ids with EOS, options); each one's hypotheses, best first, in order."""
        if self.engine.closing:
            raise Unavailable(f"model {self._model} is being unloaded; retry")
        if timeout is not None and timeout <= 0:
            self._reject("deadline")
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        pending = self.engine.waiting
        if pending + len(items) > self.config.max_pending:
            self._reject("queue_full")
            raise Overloaded(
                f"model {self._model} has {pending} sentences queued (max {self.config.max_pending}); "
                "retry with backoff"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        self._requests += 1
        banned = (self.config.pad_id, self.config.bos_id)
        sentences = [
            Sentence(
                job=Job(source, BeamSearch(options, eos_id=self.config.eos_id, banned=banned)),
                request=self._requests,
                deadline=deadline,
                rows=options.beam_size,
            )
            for source, options in items
        ]
        for sentence in sentences:
            sentence.job.owner = sentence
        self._gauge_pending(len(sentences))
        self.engine.submit(sentences)
        try:
            return [await sentence.next() for sentence in sentences]
        except BaseException:
            for sentence in sentences:  # the others leave at the next step
                self.engine.cancel(sentence)
            raise

    async def close(self) -> None:
        """Finish every sentence already queued or in flight, then stop."""
        await self.engine.close()

    # --- the StepModel, on the engine's thread -------------------------------------------------

    def join(self, new: list[Sentence]) -> list[Sentence]:
        """Encode the admitted sentences together and add their first rows to the batch."""
        self._gauge_pending(-len(new))
        width = max(len(s.job.source) for s in new)
        source_ids = np.full((len(new), width), self.config.pad_id, dtype=np.int64)
        for i, sentence in enumerate(new):
            source_ids[i, : len(sentence.job.source)] = sentence.job.source
        source_mask = source_ids != self.config.pad_id
        cross_keys, cross_values = self._graphs.encode(source_ids, source_mask)
        self._batch.join([s.job for s in new], cross_keys, cross_values, source_mask)
        return []  # no output before the first step

    def step(self, active: list[Sentence]) -> list[Sentence]:
        """One decoder step for every row; the sentences whose search finished get their answer."""
        log_probs, present_keys, present_values = self._graphs.decode(self._batch.feeds())
        if self._metrics is not None:
            requests = len({job.owner.request for job in self._batch.jobs})
            self._metrics.decode_steps.labels(self._model).inc()
            self._metrics.decode_step_rows.labels(self._model).observe(self._batch.rows)
            self._metrics.decode_step_requests.labels(self._model).observe(requests)
        finished = self._batch.advance(log_probs, present_keys, present_values)
        if self._metrics is not None:
            self._metrics.decode_active_rows.labels(self._model).set(self._batch.rows)
        answered: list[Sentence] = []
        for job in finished:
            sentence: Sentence = job.owner
            ranked = job.search.ranked()
            sentence.put(ranked, outcome=FINISHED)
            answered.append(sentence)
            if self._metrics is not None:
                self._metrics.generated_tokens.labels(self._model).inc(ranked[0].length)
                self._metrics.inferences.labels(self._model).inc()
        return answered

    def keep(self, indices: list[int]) -> None:
        # The batch holds the active sentences not finished by a step; the ones to drop are done.
        if not indices:
            self._batch = self._empty_batch()  # also after a failed step, whatever state it left
        else:
            self._batch.remove(lambda job: job.owner.done)

    def left(self, gone: list[Sentence]) -> None:
        self._gauge_pending(-sum(not s.joined for s in gone))
        for sentence in gone:
            if sentence.outcome == "deadline":
                self._reject("deadline")

    def _empty_batch(self) -> ActiveBatch:
        c = self.config
        return ActiveBatch(c.layers, c.heads, c.head_dim, bos_id=c.bos_id, tensors=self._tensors)

    def _gauge_pending(self, delta: int) -> None:
        if self._metrics is not None and delta:
            self._metrics.queue_depth.labels(self._model).inc(delta)

    def _reject(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejections.labels(self._model, reason).inc()
