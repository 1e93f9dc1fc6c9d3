"""Dynamic batching: requests that arrive together run as one onnxruntime call.

Each request brings a dict of input arrays whose first axis is its rows (images, sentences...).
Requests whose inputs agree on every other axis and dtype are concatenated, up to
`max_batch_size` rows, waiting at most `max_queue_delay_us` after the oldest one arrived; the
outputs are split back by rows so each caller gets exactly its own. The queue is bounded (a full
queue refuses at once with Overloaded), and requests whose deadline or queue timeout has passed are
dropped before compute. An input may also be a `RowSource`, which writes its rows into the batch
itself (uint8 pixels scaled on the way in, for example): each request's data is then copied once,
into the batch, however many requests share it. Batches run on `instances` worker threads of their
own, which take the next batch as soon as one finishes; only the results cross back to the event loop.

The decisions (what to take, how long to wait for company, when a lone caller runs at once on the
event loop) are a `BatchPolicy` (batch_policy.py); this module holds the queue, the lock and the
threads around it.

A caller whose deadline passes while it waits gets DeadlineExceeded at
that moment, and a caller that is cancelled (the client went away) leaves the queue at once, so
neither holds a queue slot. With batching disabled the same queue runs one request per
execution, so the limits hold either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from myelin_serving.batch_policy import DEADLINE, BatchPolicy
from myelin_serving.errors import DeadlineExceeded, Overloaded, Unavailable
from myelin_serving.metrics import Metrics
from myelin_serving.settings import BatchingSettings

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class RowSource(Protocol):
    """An input that writes its rows into the batch (shape[0] rows, every other axis and the dtype
    as the batch's), so that it need not be materialised first and then copied."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def write(self, out: np.ndarray) -> None: ...


Input = np.ndarray | RowSource
Feeds = Mapping[str, Input]
RunFn = Callable[[Arrays], Arrays]


def _call_now(callback: Callable[..., object], *args: object) -> None:
    callback(*args)


def assemble(parts: Sequence[Input]) -> np.ndarray:
    """One batch input from the requests' parts, in order: each part is copied (or written) once."""
    first = parts[0]
    if len(parts) == 1:  # a lone request (the common case at low load): no slicing
        if isinstance(first, np.ndarray):
            return first
        out = np.empty(first.shape, dtype=first.dtype)
        first.write(out)
        return out
    out = np.empty((sum(p.shape[0] for p in parts), *first.shape[1:]), dtype=first.dtype)
    offset = 0
    for part in parts:
        end = offset + part.shape[0]
        if isinstance(part, np.ndarray):
            out[offset:end] = part
        else:
            part.write(out[offset:end])
        offset = end
    return out


@dataclass(eq=False)
class _Request:
    feeds: Feeds
    rows: int
    key: tuple[object, ...]
    future: asyncio.Future[Arrays]
    enqueued: float  # the policy's clock
    deadline: float | None  # the policy's clock
    taken: bool = field(default=False)  # popped from the queue to run, or withdrawn


def _batch_key(feeds: Feeds) -> tuple[object, ...]:
    # Requests can share a batch when everything but the first axis agrees.
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(feeds.items()))


class DynamicBatcher:
    """Batches concurrent `infer` calls for one graph of one model version.

    The queue lives between two worlds: callers enqueue on the event loop, and `instances` worker
    threads take batches and run them. A worker that finishes a batch takes the next one at once,
    without waiting for the event loop to schedule it (under load the loop is busy with gRPC);
    results go back to the loop in one call per batch. `_lock` guards the queue and its counts."""

    def __init__(
        self,
        run: RunFn,
        config: BatchingSettings,
        *,
        model: str,
        version: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self.config = config
        max_rows = config.max_batch_size if config.enabled else 1
        delay = config.max_queue_delay_us / 1e6 if config.enabled else 0.0
        self.policy = BatchPolicy(
            max_rows=max_rows,
            delay=delay,
            adaptive=config.adaptive_delay,
            queue_timeout=config.queue_timeout_s,
            clock=clock,
        )
        self._model, self._version = model, str(version)
        self._metrics = metrics.for_batcher(model, str(version)) if metrics is not None else None
        if self._metrics is not None:
            self._metrics.configured(max_rows, delay, config.max_queue_size, config.instances)
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a first request, a full batch, or closing
        self._queue: deque[_Request] = deque()
        self._rows_by_key: dict[tuple[object, ...], int] = {}
        self._running = 0  # batches being executed by the workers
        self._kick_pending = False
        self._closing = False
        self._stopped = 0
        self._all_stopped: asyncio.Future[None] = self._loop.create_future()
        self._workers = [
            threading.Thread(target=self._work, name=f"ort-{model}-{version}-{i}", daemon=True)
            for i in range(config.instances)
        ]
        for worker in self._workers:
            worker.start()

    async def infer(self, feeds: Feeds, *, timeout: float | None = None) -> Arrays:
        """Run `feeds` (first axis = rows) in some batch; `timeout` is the caller's remaining deadline."""
        if self._closing:
            raise Unavailable(f"model {self._model} version {self._version} is being unloaded; retry")
        if timeout is not None and timeout <= 0:
            self._reject("deadline")
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        now = self.policy.clock()
        rows = next(iter(feeds.values())).shape[0]
        request = _Request(
            feeds=feeds,
            rows=rows,
            key=_batch_key(feeds),
            future=self._loop.create_future(),
            enqueued=now,
            deadline=None if timeout is None else now + timeout,
        )
        wake = False
        with self._lock:
            queued = len(self._queue)
            if queued < self.config.max_queue_size:
                wake = self._admit(request)
        if queued >= self.config.max_queue_size:
            self._reject("queue_full")
            raise Overloaded(
                f"model {self._model} has {queued} requests queued (max_queue_size "
                f"{self.config.max_queue_size}); retry with backoff"
            )
        if wake and not self._kick_pending:
            # At the end of this turn of the event loop, so that requests arriving in the same turn
            # are all queued before a worker looks.
            self._kick_pending = True
            self._loop.call_soon(self._kick)
        expiry = None if timeout is None else self._loop.call_later(timeout, self._expire, request)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)  # the caller went away: free its slot now, not when a worker gets to it
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    def _admit(self, request: _Request) -> bool:
        """Under the lock: queue it; True if a worker should hear of it."""
        self.policy.arrived(request.enqueued)
        self._queue.append(request)
        self._add_depth(1)
        queued_rows = self._rows_by_key[request.key] = self._rows_by_key.get(request.key, 0) + request.rows
        return self.policy.wake_worker(len(self._queue), queued_rows)

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        with self._lock:
            self._closing = True
            self._arrived.notify_all()
        await self._all_stopped

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def _kick(self) -> None:  # on the event loop, after the requests of this turn were queued
        self._kick_pending = False
        with self._lock:
            if not self._lone():
                self._arrived.notify()
                return
            batch, dropped = self._take(self._queue[0].key, self.policy.clock())
        self._fail(dropped)
        if batch:  # one request at most
            self._execute(batch, _call_now)

    def _lone(self) -> bool:
        """Under the lock: whether the one queued request should run here on the event loop (nothing
        else queued or running, and the policy says so)."""
        if len(self._queue) != 1 or self._running or self._closing:
            return False
        return self.policy.runs_inline(self._queue[0].rows, self._queue[0].enqueued)

    def _expire(self, request: _Request) -> None:
        """The caller's deadline passed: it gets DeadlineExceeded now, queued or running."""
        if request.future.done():
            return
        if self._withdraw(request):
            self._reject("deadline")
            request.future.set_exception(DeadlineExceeded("the request's deadline passed while it was queued"))
        else:
            request.future.set_exception(DeadlineExceeded("the request's deadline passed while its batch was running"))

    def _withdraw(self, request: _Request) -> bool:
        """Take a request that no worker has popped out of the queue; True if it was still queued."""
        with self._lock:
            if request.taken:
                return False
            request.taken = True
            self._queue.remove(request)
            remaining = self._rows_by_key[request.key] - request.rows
            if remaining:
                self._rows_by_key[request.key] = remaining
            else:
                del self._rows_by_key[request.key]
            self._arrived.notify_all()  # a worker waiting on it as the oldest request re-reads the head
        self._add_depth(-1)
        return True

    # --- the worker threads ---------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    batch, dropped = self._next_batch()
                    if batch is None:
                        return
                    self._running += 1
                try:
                    if dropped:
                        self._call_soon(self._fail, dropped)
                    if batch:
                        self._execute(batch, self._call_soon)
                finally:
                    with self._lock:
                        self._running -= 1
        finally:
            self._call_soon(self._worker_stopped)

    def _next_batch(self) -> tuple[list[_Request] | None, list[tuple[_Request, BaseException]]]:
        """Under the lock: wait for the oldest request's company, then take its batch (None: stop)."""
        while True:
            if not self._queue:
                if self._closing:
                    return None, []
                self._arrived.wait()
                continue
            first = self._queue[0]
            if self._wait_for_company(first):
                return self._take(first.key, self.policy.clock())

    def _wait_for_company(self, first: _Request) -> bool:
        """Wait as long as the policy says `first` waits for company; False if `first` left the head."""
        while not self._closing:
            remaining = self.policy.wait_for_company(first.enqueued, self._rows_by_key.get(first.key, 0))
            if remaining <= 0:
                break
            self._arrived.wait(remaining)
            if not self._queue or self._queue[0] is not first:
                return False
        return True

    def _take(self, key: tuple[object, ...], now: float) -> tuple[list[_Request], list[tuple[_Request, BaseException]]]:
        """Pop the requests that run next: compatible, live, in arrival order, within max rows; and
        the ones found expired on the way, with their errors."""
        batch: list[_Request] = []
        dropped: list[tuple[_Request, BaseException]] = []
        rows = 0
        queued = len(self._queue)
        keep: deque[_Request] = deque()
        while self._queue:
            request = self._queue.popleft()
            if request.key != key or (batch and not self.policy.fits(rows, request.rows)):
                keep.append(request)
                continue
            request.taken = True
            self._rows_by_key[key] -= request.rows
            if request.future.done():  # caller cancelled or went away
                continue
            verdict = self.policy.verdict(request.enqueued, request.deadline, now)
            if verdict is not None:
                self._reject(verdict)
                if verdict == DEADLINE:
                    error = DeadlineExceeded("the request's deadline passed while it was queued")
                else:
                    error = DeadlineExceeded(f"queued longer than queue_timeout_s ({self.config.queue_timeout_s} s)")
                dropped.append((request, error))
                continue
            batch.append(request)
            rows += request.rows
        self._queue = keep
        if self._rows_by_key.get(key) == 0:
            del self._rows_by_key[key]
        self._add_depth(len(self._queue) - queued)
        if self._metrics is not None:
            for request in batch:
                self._metrics.queue_duration.observe(now - request.enqueued)
        return batch, dropped

    def _execute(self, batch: list[_Request], hand_back: Callable[..., None]) -> None:
        """Run `batch`; its results and errors reach the event loop through `hand_back(callback, *args)`:
        `_call_soon` from a worker thread, a plain call on the loop itself."""
        rows = sum(r.rows for r in batch)
        try:
            outputs = self._timed_run({name: assemble([r.feeds[name] for r in batch]) for name in batch[0].feeds})
        except Exception as exc:
            if len(batch) > 1:
                # One request must not fail its neighbours: rerun each alone.
                for request in batch:
                    self._execute([request], hand_back)
                return
            hand_back(self._fail, [(batch[0], exc)])
            return
        hand_back(self._deliver, batch, outputs, rows)

    def _call_soon(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(callback, *args)

    # --- back on the event loop -----------------------------------------------------------------

    def _deliver(self, batch: list[_Request], outputs: Arrays, rows: int) -> None:
        self._observe_batch(rows)
        offset = 0
        for request in batch:
            end = offset + request.rows
            if not request.future.done():
                request.future.set_result(
                    {
                        name: (out[offset:end] if out.ndim and out.shape[0] == rows else out)
                        for name, out in outputs.items()
                    }
                )
            offset = end

    @staticmethod
    def _fail(failures: list[tuple[_Request, BaseException]]) -> None:
        for request, error in failures:
            if not request.future.done():
                request.future.set_exception(error)

    def _worker_stopped(self) -> None:
        self._stopped += 1
        if self._stopped == len(self._workers) and not self._all_stopped.done():
            self._all_stopped.set_result(None)

    def _observe_batch(self, rows: int) -> None:
        if self._metrics is not None:
            self._metrics.batch_size.observe(rows)
            self._metrics.inferences.inc(rows)
            self._metrics.executions.inc()

    def _timed_run(self, feeds: Arrays) -> Arrays:
        started = time.perf_counter()
        outputs = self._run(feeds)
        seconds = time.perf_counter() - started
        self.policy.ran(next(iter(feeds.values())).shape[0], seconds)
        if self._metrics is not None:
            self._metrics.inference_duration.observe(seconds)
        return outputs

    def _add_depth(self, delta: int) -> None:
        # inc/dec rather than set: several versions of one model share the gauge.
        if self._metrics is not None and delta:
            self._metrics.queue_depth.inc(delta)

    def _reject(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected(reason)
