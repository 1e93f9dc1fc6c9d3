"""The dynamic batcher's decisions (BatchPolicy), on a fake clock: no threads, no event loop, no graph."""

from __future__ import annotations

import pytest

from myelin_serving.batch_policy import DEADLINE, INLINE_BELOW_S, QUEUE_TIMEOUT, BatchPolicy

DELAY = 0.002  # 2 ms window


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, *, delay: float = DELAY, adaptive: bool = True, max_rows: int = 8) -> BatchPolicy:
    return BatchPolicy(max_rows=max_rows, delay=delay, adaptive=adaptive, queue_timeout=1.0, clock=clock)


def arrive_every(p: BatchPolicy, clock: Clock, gap: float, count: int) -> float:
    """`count` arrivals `gap` seconds apart; returns the last arrival's time."""
    for _ in range(count):
        clock.now += gap
        p.arrived(clock.now)
    return clock.now


def test_a_lone_caller_in_a_closed_loop_never_waits_and_runs_inline_once_runs_are_known_short() -> None:
    clock = Clock()
    p = policy(clock)
    enqueued = arrive_every(p, clock, 0.05, 5)  # one request every 50 ms: far apart next to the 2 ms window
    assert p.nobody_expected(enqueued)
    assert p.wait_for_company(enqueued, queued_rows=1) == 0.0
    assert not p.runs_inline(1, enqueued), "no run measured yet: the cost of a run is unknown"
    p.ran(1, INLINE_BELOW_S / 10)
    assert p.runs_inline(1, enqueued)
    p.ran(1, 0.01)  # runs became slow (the average moves a fifth of the way, still well above the bound)
    assert not p.runs_inline(1, enqueued), "a long run goes to a worker thread"


def test_concurrent_callers_wait_for_company_until_the_window_ends() -> None:
    clock = Clock()
    p = policy(clock)
    enqueued = arrive_every(p, clock, 0.0001, 20)  # a burst: arrivals 0.1 ms apart
    p.ran(1, INLINE_BELOW_S / 10)
    assert not p.nobody_expected(enqueued)
    assert not p.runs_inline(1, enqueued), "company is expected: it goes to the worker and waits there"
    assert p.wait_for_company(enqueued, queued_rows=1) == pytest.approx(DELAY)
    clock.now += DELAY / 4
    assert p.wait_for_company(enqueued, queued_rows=3) == pytest.approx(DELAY * 3 / 4)
    assert p.wait_for_company(enqueued, queued_rows=8) == 0.0, "a full batch runs at once"
    clock.now += DELAY
    assert p.wait_for_company(enqueued, queued_rows=3) == 0.0, "the window is over"


def test_a_burst_after_a_quiet_spell_is_recognised_within_a_few_requests() -> None:
    clock = Clock()
    p = policy(clock)
    arrive_every(p, clock, 10.0, 3)  # quiet: the gap average sits at its cap
    expected = []
    for _ in range(8):
        enqueued = arrive_every(p, clock, 0.0001, 1)
        expected.append(not p.nobody_expected(enqueued))
    assert expected[0] is False, "one close arrival is not yet a burst"
    assert all(expected[4:]), f"company expected after a few close arrivals: {expected}"


def test_without_adaptive_delay_the_oldest_request_waits_the_whole_window() -> None:
    clock = Clock()
    p = policy(clock, adaptive=False)
    enqueued = arrive_every(p, clock, 1.0, 5)  # alone, but the window is a toll
    p.ran(1, INLINE_BELOW_S / 10)
    assert p.wait_for_company(enqueued, queued_rows=1) == pytest.approx(DELAY)
    assert not p.runs_inline(1, enqueued)


def test_batching_off_never_waits_and_a_short_lone_run_stays_inline() -> None:
    clock = Clock()
    p = policy(clock, delay=0.0, max_rows=1)
    enqueued = arrive_every(p, clock, 0.05, 3)
    p.ran(1, INLINE_BELOW_S / 10)
    assert p.wait_for_company(enqueued, queued_rows=1) == 0.0
    assert p.runs_inline(1, enqueued)
    assert not p.fits(1, 1), "with batching off every request runs alone"


def test_a_worker_hears_of_a_first_request_and_of_a_full_batch_only() -> None:
    p = policy(Clock(), max_rows=4)
    assert p.wake_worker(queued=1, queued_rows=1)
    assert not p.wake_worker(queued=2, queued_rows=2)
    assert p.wake_worker(queued=3, queued_rows=4)
    assert p.wake_worker(queued=3, queued_rows=6)


def test_what_joins_a_batch_stays_within_max_rows() -> None:
    p = policy(Clock(), max_rows=8)
    assert p.fits(0, 8) and p.fits(5, 3)
    assert not p.fits(5, 4) and not p.fits(8, 1)


def test_requests_out_of_time_are_dropped_with_the_reason() -> None:
    clock = Clock()
    p = policy(clock)
    enqueued = clock.now
    assert p.verdict(enqueued, enqueued + 0.5, clock.now) is None
    assert p.verdict(enqueued, None, enqueued + 0.9) is None
    assert p.verdict(enqueued, enqueued + 0.5, enqueued + 0.5) == DEADLINE
    assert p.verdict(enqueued, None, enqueued + 1.5) == QUEUE_TIMEOUT
    assert p.verdict(enqueued, enqueued + 2.0, enqueued + 1.5) == QUEUE_TIMEOUT
