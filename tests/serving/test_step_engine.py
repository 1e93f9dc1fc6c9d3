"""The step engine (engine.py) with a counting StepModel: admission by rows, leaving between steps,
deadlines, cancellation, a failing step, and the drain on close. Real thread, no graph."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from myelin_serving.engine import StepEngine, Work
from myelin_serving.errors import DeadlineExceeded, Unavailable


@dataclass(eq=False, kw_only=True)
class Count(Work):
    """Counts to `steps`, one number per step; `forever` never finishes on its own."""

    name: str
    steps: int = 3
    forever: bool = False
    count: int = 0

    def farewell(self, reason: str) -> str:
        return f"{self.name} {reason}"


class Counting:
    def __init__(self, *, fail_at_step: int | None = None, pause: float = 0.0) -> None:
        self.batches: list[list[str]] = []  # the names in each step, in row order
        self.rows: list[str] = []  # the model's own rows: join appends, keep selects
        self.left_outcomes: dict[str, str] = {}
        self.fail_at_step = fail_at_step
        self.pause = pause
        self.thread: set[str] = set()

    def join(self, new: list[Count]) -> list[Count]:
        self.rows += [w.name for w in new]
        return []

    def step(self, active: list[Count]) -> list[Count]:
        self.thread.add(threading.current_thread().name)
        assert self.rows == [w.name for w in active], "the model's rows follow the engine's work"
        self.batches.append([w.name for w in active])
        if len(self.batches) == self.fail_at_step:
            raise RuntimeError("the graph broke")
        time.sleep(self.pause)
        for work in active:
            work.count += 1
            last = not work.forever and work.count >= work.steps
            work.put(work.count, outcome="counted" if last else "")
        return active

    def keep(self, indices: list[int]) -> None:
        self.rows = [self.rows[i] for i in indices]

    def left(self, gone: list[Count]) -> None:
        self.left_outcomes.update({w.name: w.outcome for w in gone})


async def read_all(work: Count) -> list[object]:
    out: list[object] = []
    while not (work.done and not work.outbox):
        try:
            out.append(await work.next())
        except Exception as exc:
            out.append(exc)
    return out


def test_work_is_admitted_while_its_rows_fit_and_leaves_between_steps() -> None:
    async def main() -> tuple[Counting, list[list[object]]]:
        model = Counting()
        engine = StepEngine(model, name="count", max_rows=4)
        works = [Count(name="a", rows=2, steps=2), Count(name="b", rows=2, steps=4), Count(name="c", rows=3, steps=1)]
        engine.submit(works)
        outputs = await asyncio.gather(*(read_all(w) for w in works))
        await engine.close()
        assert (engine.live, engine.waiting) == (0, 0)
        return model, outputs

    model, outputs = asyncio.run(main())
    assert outputs == [[1, 2], [1, 2, 3, 4], [1]]
    # c (3 rows) waits until a (2 rows) has left: then b + c make 5 rows > 4, so it waits for b too.
    assert model.batches == [["a", "b"], ["a", "b"], ["b"], ["b"], ["c"]]
    assert model.left_outcomes == {"a": "counted", "b": "counted", "c": "counted"}
    assert model.thread == {"steps-count"}


def test_cancelled_and_expired_work_leaves_before_the_next_step() -> None:
    async def main() -> tuple[Counting, list[object], list[object], list[object]]:
        model = Counting(pause=0.005)
        engine = StepEngine(model, name="count")
        stays = Count(name="stays", steps=40)
        cancelled = Count(name="cancelled", forever=True)
        expires = Count(name="expires", forever=True, deadline=time.monotonic() + 0.05)
        engine.submit([stays, cancelled, expires])
        assert [await cancelled.next() for _ in range(3)] == [1, 2, 3]
        engine.cancel(cancelled)
        outputs = await asyncio.gather(read_all(stays), read_all(cancelled), read_all(expires))
        await engine.close()
        return model, *outputs

    model, stays, cancelled, expires = asyncio.run(main())
    assert stays == list(range(1, 41))
    assert cancelled[-1] == "cancelled cancelled"
    assert isinstance(expires[-1], DeadlineExceeded)
    assert model.left_outcomes == {"stays": "counted", "cancelled": "cancelled", "expires": "deadline"}
    gone_after = {name: max(i for i, b in enumerate(model.batches) if name in b) for name in ("cancelled", "expires")}
    assert all(i < len(model.batches) - 1 for i in gone_after.values()), "they left while `stays` went on"


def test_a_failing_step_fails_the_work_in_it_and_the_engine_keeps_serving() -> None:
    async def main() -> tuple[list[object], list[object]]:
        engine = StepEngine(Counting(fail_at_step=2), name="count")
        first = Count(name="first", steps=5)
        engine.submit([first])
        broken = await read_all(first)
        second = Count(name="second", steps=2)
        engine.submit([second])
        after = await read_all(second)
        await engine.close()
        return broken, after

    broken, after = asyncio.run(main())
    assert broken[0] == 1 and isinstance(broken[-1], RuntimeError)
    assert after == [1, 2]


def test_close_drains_then_cancels_what_outlives_the_timeout_and_refuses_new_work() -> None:
    async def main() -> tuple[Counting, list[object], list[object]]:
        model = Counting(pause=0.002)
        engine = StepEngine(model, name="count")
        finishes, endless = Count(name="finishes", steps=3), Count(name="endless", forever=True)
        engine.submit([finishes, endless])
        reads = asyncio.gather(read_all(finishes), read_all(endless))
        await engine.close(drain_timeout=0.1)
        with pytest.raises(Unavailable, match="being unloaded"):
            engine.submit([Count(name="late")])
        return model, *(await reads)

    model, finishes, endless = asyncio.run(main())
    assert finishes == [1, 2, 3]
    assert endless[-1] == "endless cancelled" and len(endless) > 3
    assert model.left_outcomes == {"finishes": "counted", "endless": "cancelled"}
