"""The step engine: one thread per model version runs every request's work in shared steps.

A family's decoder (a sampling loop, a beam search: anything that advances all its work one step
at a time) plugs in as a `StepModel`; the engine owns the thread model around it. Each iteration of the thread:
1. drops work that finished, was cancelled (the caller went away) or passed its deadline, so a
   cancelled request leaves the batch within one step;
2. admits queued work in arrival order while its rows fit under `max_rows`, and has the model
   `join` it (prefill / encode: the newcomers together, in one graph call);
3. has the model run ONE `step` for every active piece of work together.

Work therefore joins and leaves between steps and never waits for other work to finish.

Why a thread and not the event loop: onnxruntime releases the GIL while a step computes, so the
event loop sends one step's output (gRPC writes) while the next step runs, and the steps never
wait for the sends. Each piece of work's output goes into its own outbox; after each step the
thread asks the event loop, with at most one pending `call_soon_threadsafe`, to wake the readers
that have new output. (Measured on a language model under the CPU lock: steps inline on the event
loop, 1 stream 1,611 tokens/s; each step awaited on a worker through `run_in_executor`, 1,124:
the hand-off in and out of the event loop at every step cost more than the overlap gained.)

The engine knows nothing of gRPC, tokenizers, sampling or beams: the model says what a step does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from myelin_serving.errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)

CANCELLED = "cancelled"


@dataclass(eq=False, kw_only=True)
class Work:
    """One request's unit of work (a sequence to generate, a sentence to translate).

    The model's thread puts output into `outbox` (`put`); the caller reads it on the event loop,
    woken through `ready`. A lock makes finishing happen once, whichever thread gets there first.
    """

    EXPIRED: ClassVar[str] = "the deadline passed while generating"

    deadline: float | None = None  # time.monotonic()
    rows: int = 1  # the rows it may need in a step, what max_rows counts
    outbox: deque[Any] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set on the event loop only
    done: bool = False
    outcome: str = ""  # why it left: set by the model, or cancelled, deadline, error
    joined: bool = False  # admitted to the batch (set by the engine's thread)
    submitted: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, item: Any, *, outcome: str = "") -> None:
        """Output, from the model's thread; with `outcome`, the last output."""
        with self._lock:
            if not self.done:
                self.outbox.append(item)
                if outcome:
                    self.done, self.outcome = True, outcome

    def cancel(self, reason: str = CANCELLED) -> None:
        """The caller went away (or the service stops it): no more steps for this work."""
        with self._lock:
            if not self.done:
                self.done, self.outcome = True, reason
                last = self.farewell(reason)
                if last is not None:
                    self.outbox.append(last)

    def fail(self, error: BaseException, outcome: str) -> None:
        with self._lock:
            if not self.done:
                self.done, self.outcome = True, outcome
                self.outbox.append(error)

    def farewell(self, reason: str) -> Any:
        """Under the lock: what a reader still gets when the work is cancelled (None: nothing)."""
        return None

    async def next(self) -> Any:
        """The next output, on the event loop; raises what the work failed with."""
        while not self.outbox:
            # Clearing then waiting is safe: output that lands in between comes with a wake-up
            # that runs on this event loop after this coroutine suspends.
            self.ready.clear()
            await self.ready.wait()
        item = self.outbox.popleft()
        if isinstance(item, BaseException):
            raise item
        return item


W = TypeVar("W", bound=Work)


class StepModel(Protocol[W]):
    """What the engine drives. Every method runs on the engine's thread, one at a time."""

    def join(self, new: list[W]) -> Iterable[W]:
        """Start the admitted work (prefill, encode); its rows go after the active ones.
        Returns the work that has new output."""
        ...

    def step(self, active: list[W]) -> Iterable[W]:
        """One step for all active work, in join order (some may be done: cancelled meanwhile).
        Returns the work that has new output."""
        ...

    def keep(self, indices: list[int]) -> None:
        """Between steps: only the rows of active[i], i in `indices` (the work not done), stay."""
        ...

    def left(self, gone: list[W]) -> None:
        """This work left (done, cancelled, expired, failed; `joined` or still queued): count it."""
        ...


class StepEngine(Generic[W]):
    """The thread that runs a StepModel's steps for one model version."""

    def __init__(
        self, model: StepModel[W], *, name: str, max_rows: int | None = None, stream_interval: float = 0.0
    ) -> None:
        self._model = model
        self._name = name  # "NAME" or "NAME version N": messages and the thread's name
        self._max_rows = max_rows  # rows of active work at most (None: no bound)
        self._stream_interval = stream_interval  # seconds between wake-ups of the readers, at least
        self._event_loop = asyncio.get_running_loop()
        self._lock = threading.Lock()  # guards _arrived and the counts
        self._arrived: list[W] = []  # submitted, not yet seen by the thread
        self._live = 0  # submitted and not yet left
        self._waiting = 0  # submitted, not yet joined or left
        self._closing = False
        self._abort = False  # set by close() after the drain timeout
        self._wakeup = threading.Event()
        self._kick_pending = False
        self._queue: deque[W] = deque()  # seen by the thread, not yet admitted; the thread's alone
        self._active: list[W] = []  # the batch's work, in join order; the thread's alone
        self._rows = 0  # rows of the active work
        self._to_wake: deque[W] = deque()  # work with new output, for the event loop
        self._wake_pending = False
        self._last_wake = 0.0
        self._stopped: asyncio.Future[None] = self._event_loop.create_future()
        self._thread = threading.Thread(target=self._run, name=f"steps-{name}", daemon=True)
        self._thread.start()

    @property
    def live(self) -> int:
        """Work submitted and not yet left."""
        return self._live

    @property
    def waiting(self) -> int:
        """Work submitted and not yet admitted to the batch."""
        return self._waiting

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(self, works: list[W]) -> None:
        """On the event loop: queue work for the next step. Raises Unavailable once closing."""
        if self._closing:
            raise Unavailable(f"model {self._name} is being unloaded; retry")
        now = time.monotonic()
        for work in works:
            work.submitted = now
        with self._lock:
            self._arrived.extend(works)
            self._live += len(works)
            self._waiting += len(works)
        if not self._kick_pending:
            # At the end of this turn of the event loop, so that work submitted in the same turn
            # is admitted together (one prefill or encoder call) when the thread was idle.
            self._kick_pending = True
            self._event_loop.call_soon(self._kick)

    def cancel(self, work: W) -> None:
        """On the event loop: the caller went away. The thread drops the work before its next step."""
        if not work.done:
            work.cancel()
            work.ready.set()
            self._wakeup.set()

    async def close(self, drain_timeout: float | None = None) -> None:
        """Refuse new work, let the running work finish (up to drain_timeout), cancel the rest."""
        self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), drain_timeout)
        except TimeoutError:
            self._abort = True  # the thread cancels every piece of work it holds, then stops
            self._wakeup.set()
            await self._stopped

    def _kick(self) -> None:
        self._kick_pending = False
        self._wakeup.set()

    # --- the engine's thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wakeup.clear()  # before looking: a submit after this sets it again
                with self._lock:
                    self._queue.extend(self._arrived)
                    self._arrived.clear()
                    closing = self._closing
                self._reap()
                new = self._admit()
                if not new and not self._active:
                    if closing and not self._queue:
                        return
                    self._wakeup.wait()
                    continue
                try:
                    if new:
                        self._active.extend(new)
                        self._wake(list(self._model.join(new)), urgent=True)  # first output goes out at once
                        self._reap()
                    if self._active:
                        changed = list(self._model.step(self._active))
                        self._wake(changed, urgent=any(w.done for w in changed))  # last output at once
                except Exception as exc:  # a broken graph must not take the engine down with it
                    log.exception("step of model %s failed", self._name)
                    for work in self._active:
                        work.fail(exc, "error")
                    self._wake(self._active, urgent=True)
                    self._reap()
        finally:
            with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is waiting
                self._event_loop.call_soon_threadsafe(self._stopped.set_result, None)

    def _admit(self) -> list[W]:
        """Take queued work in arrival order while it fits; drop what died while queued."""
        new: list[W] = []
        gone: list[W] = []
        now = time.monotonic()
        while self._queue:
            work = self._queue[0]
            if self._abort:
                work.cancel()
            elif not work.done and work.deadline is not None and now >= work.deadline:
                work.fail(DeadlineExceeded(work.EXPIRED), "deadline")
            if work.done:
                gone.append(self._queue.popleft())
                continue
            if self._max_rows is not None and self._rows + work.rows > self._max_rows:
                break
            self._queue.popleft()
            work.joined = True
            self._rows += work.rows
            new.append(work)
        if new:
            with self._lock:
                self._waiting -= len(new)
        if gone:
            self._wake(gone, urgent=True)
            self._leave(gone)
        return new

    def _reap(self) -> None:
        """Between steps: drop the active work that finished, was cancelled or expired."""
        active = self._active
        if self._abort:
            for work in active:
                work.cancel()
            self._wake(active, urgent=True)
        now = time.monotonic()
        expired = [w for w in active if not w.done and w.deadline is not None and now >= w.deadline]
        for work in expired:
            work.fail(DeadlineExceeded(work.EXPIRED), "deadline")
        if expired:
            self._wake(expired, urgent=True)
        keep = [i for i, w in enumerate(active) if not w.done]
        if len(keep) == len(active):
            return  # the common case between two steps: nothing to drop
        gone = [w for w in active if w.done]
        self._model.keep(keep)
        self._active = [active[i] for i in keep]
        self._rows -= sum(w.rows for w in gone)
        self._leave(gone)

    def _leave(self, gone: list[W]) -> None:
        with self._lock:
            self._live -= len(gone)
            self._waiting -= sum(not w.joined for w in gone)
        self._model.left(gone)

    def _wake(self, works: Iterable[W], *, urgent: bool = False) -> None:
        """Ask the event loop to wake these works' readers: one call in flight at most, and unless
        `urgent`, none sooner than the stream interval after the last (the works wait in
        `_to_wake` for the next one; a step that finishes any work is urgent)."""
        self._to_wake.extend(works)
        now = time.monotonic()
        if not self._wake_pending and (urgent or now - self._last_wake >= self._stream_interval):
            self._wake_pending, self._last_wake = True, now
            with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is reading
                self._event_loop.call_soon_threadsafe(self._wake_readers)

    def _wake_readers(self) -> None:  # on the event loop
        self._wake_pending = False  # first: output added from now on schedules another call
        while self._to_wake:
            self._to_wake.popleft().ready.set()
