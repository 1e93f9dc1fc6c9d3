"""The dynamic batcher's decisions, apart from its queue, lock and threads (batching.py).

What to take (compatible requests in arrival order, within max rows, none that is out of time),
when to wake a worker, how long the oldest request waits for company, and when a lone caller runs
at once on the event loop. Time comes from an injected clock, so every decision can be tested by
stepping a fake clock, without threads.

The delay is an upper bound, not a toll (unless `adaptive` is off): the policy keeps a moving
average of the gap between arrivals and waits only when the next request is expected inside the
window. A lone caller in a closed loop (the next request comes only after this one's answer)
therefore never waits, while concurrent callers fill batches. For the same lone caller a short
batch runs on the event loop itself rather than on a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

GAP_SMOOTHING = 0.2  # weight of the newest inter-arrival gap in the moving average
# A batch expected to run faster than this runs on the event loop when nobody else is queued or
# expected before it would finish (a lone caller): handing it to a worker thread and back costs more
# than the run itself (a small MLP at concurrency 1). Under concurrency it always goes to the thread.
INLINE_BELOW_S = 0.0005
ROW_TIME_SMOOTHING = 0.2
DEADLINE, QUEUE_TIMEOUT = "deadline", "queue_timeout"


class BatchPolicy:
    """Decisions for one batcher. `arrived` and `ran` feed it; the rest only read its state."""

    def __init__(
        self,
        *,
        max_rows: int,
        delay: float,
        adaptive: bool,
        queue_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.delay = delay  # seconds the oldest request may wait for company; 0: never
        self.adaptive = adaptive
        self.queue_timeout = queue_timeout
        self.clock = clock
        # Moving average of the time between arrivals, capped so that a burst after a quiet spell
        # is recognised within a few requests; it starts at the cap (no company expected).
        self._gap_cap = max(2 * delay, 2 * INLINE_BELOW_S)
        self.gap = self._gap_cap
        self.last_arrival = float("-inf")
        self.row_seconds = float("inf")  # moving average of execution time per row; unknown at first

    def arrived(self, at: float) -> None:
        """A request was queued at `at` (the clock's time)."""
        self.gap += GAP_SMOOTHING * (min(at - self.last_arrival, self._gap_cap) - self.gap)
        self.last_arrival = at

    def ran(self, rows: int, seconds: float) -> None:
        """A batch of `rows` rows ran in `seconds` (from any thread: float assignments only)."""
        per_row = seconds / (rows or 1)
        if self.row_seconds == float("inf"):
            self.row_seconds = per_row
        else:
            self.row_seconds += ROW_TIME_SMOOTHING * (per_row - self.row_seconds)

    def wake_worker(self, queued: int, queued_rows: int) -> bool:
        """After an arrival: whether a worker has something new to do (a first request, or a full
        batch of the arrival's kind). Others join the queue silently; the worker takes them when its
        wait ends."""
        return queued == 1 or queued_rows >= self.max_rows

    def nobody_expected(self, enqueued: float) -> bool:
        """The arrival-gap average says no company comes before the window of a request queued at
        `enqueued` ends."""
        return self.adaptive and self.last_arrival + self.gap > enqueued + self.delay

    def wait_for_company(self, enqueued: float, queued_rows: int) -> float:
        """Seconds the oldest request (queued at `enqueued`, `queued_rows` rows of its kind queued)
        still waits for company at most; 0: take its batch now."""
        if self.delay <= 0 or queued_rows >= self.max_rows:
            return 0.0
        remaining = enqueued + self.delay - self.clock()
        if remaining <= 0 or self.nobody_expected(enqueued):
            return 0.0  # the window is over, or nobody is expected to arrive before it is
        return remaining

    def runs_inline(self, rows: int, enqueued: float) -> bool:
        """Whether the one queued request (nothing else queued or running) runs on the event loop:
        nobody expected before its window would end or its run would finish, and a short run
        (handing it to a worker thread and back would cost more)."""
        expected = self.row_seconds * rows
        no_wait = self.delay == 0 or self.nobody_expected(enqueued)
        return no_wait and expected < INLINE_BELOW_S and self.last_arrival + self.gap > self.clock() + expected

    def fits(self, batch_rows: int, rows: int) -> bool:
        """Whether a request of `rows` rows joins a batch of `batch_rows` rows taken so far (the
        batcher takes the first request of a batch whatever its size)."""
        return batch_rows + rows <= self.max_rows

    def verdict(self, enqueued: float, deadline: float | None, now: float) -> str | None:
        """None: the request may run at `now`; else why it is dropped (DEADLINE, QUEUE_TIMEOUT)."""
        if deadline is not None and now >= deadline:
            return DEADLINE
        if now - enqueued > self.queue_timeout:
            return QUEUE_TIMEOUT
        return None
