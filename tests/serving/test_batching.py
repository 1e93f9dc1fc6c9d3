"""The dynamic batcher on a plain function: batching, routing, limits, deadlines, isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from myelin_serving.batching import DynamicBatcher
from myelin_serving.errors import DeadlineExceeded, Overloaded
from myelin_serving.metrics import Metrics
from myelin_serving.settings import BatchingSettings


class Recorder:
    """A stand-in model: doubles its input and records each call's batch size."""

    def __init__(self, delay: float = 0.0, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        with self.lock:
            self.batches.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError("poisoned input")
        return {"y": x * 2, "rows": np.arange(len(x))}


def config(**overrides: object) -> BatchingSettings:
    return BatchingSettings.model_validate({"max_batch_size": 64, "max_queue_delay_us": 20_000, **overrides})


def test_concurrent_requests_share_one_execution_and_get_their_own_rows() -> None:
    async def scenario() -> tuple[list[int], list[np.ndarray]]:
        run = Recorder()
        batcher = DynamicBatcher(run, config(), model="m", version=1)
        inputs = [np.full((i % 3 + 1, 4), i, dtype=np.float32) for i in range(10)]
        outputs = await asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
        await batcher.close()
        for x, out in zip(inputs, outputs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        return run.batches, outputs

    batches, _ = asyncio.run(scenario())
    assert batches == [sum(i % 3 + 1 for i in range(10))]


def test_max_batch_size_splits_batches_and_big_requests_run_alone() -> None:
    async def scenario() -> list[int]:
        run = Recorder()
        batcher = DynamicBatcher(run, config(max_batch_size=4), model="m", version=1)
        sizes = [3, 3, 2, 9, 1]
        await asyncio.gather(*(batcher.infer({"x": np.zeros((n, 2), np.float32)}) for n in sizes))
        await batcher.close()
        return run.batches

    # In arrival order, filling each batch up to 4 rows: [3 + 1], [3], [2], then 9 alone.
    assert asyncio.run(scenario()) == [4, 3, 2, 9]


def test_disabled_batching_runs_one_request_per_execution() -> None:
    async def scenario() -> list[int]:
        run = Recorder()
        batcher = DynamicBatcher(run, config(enabled=False), model="m", version=1)
        await asyncio.gather(*(batcher.infer({"x": np.zeros((2, 2), np.float32)}) for _ in range(5)))
        await batcher.close()
        return run.batches

    assert asyncio.run(scenario()) == [2, 2, 2, 2, 2]


def test_incompatible_shapes_are_not_mixed() -> None:
    async def scenario() -> list[int]:
        run = Recorder()
        batcher = DynamicBatcher(run, config(), model="m", version=1)
        await asyncio.gather(
            batcher.infer({"x": np.zeros((1, 3), np.float32)}),
            batcher.infer({"x": np.zeros((1, 5), np.float32)}),
            batcher.infer({"x": np.zeros((1, 3), np.float32)}),
        )
        await batcher.close()
        return run.batches

    assert sorted(asyncio.run(scenario())) == [1, 2]


def test_full_queue_refuses_at_once_and_counts_it() -> None:
    registry = CollectorRegistry()

    async def scenario() -> None:
        run = Recorder(delay=0.2)
        batcher = DynamicBatcher(
            run, config(max_queue_size=2, max_batch_size=1), model="m", version=1, metrics=Metrics(registry)
        )
        first = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)}))
        await asyncio.sleep(0.05)  # running now; the queue is empty again
        queued = [asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)})) for _ in range(2)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="max_queue_size"):
            await batcher.infer({"x": np.zeros((1, 1), np.float32)})
        assert time.perf_counter() - started < 0.05
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(scenario())
    assert registry.get_sample_value("myelin_batcher_rejections_total", {"model": "m", "code": "queue_full"}) == 1


def test_expired_requests_are_dropped_before_compute() -> None:
    async def scenario() -> list[int]:
        run = Recorder(delay=0.2)
        batcher = DynamicBatcher(run, config(max_batch_size=1), model="m", version=1)
        blocker = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)}))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await batcher.infer({"x": np.ones((7, 1), np.float32)}, timeout=0.05)
        with pytest.raises(DeadlineExceeded):
            await batcher.infer({"x": np.ones((1, 1), np.float32)}, timeout=0)
        await blocker
        await batcher.close()
        return run.batches

    assert asyncio.run(scenario()) == [1], "the expired request must never reach the model"


def test_cancelled_callers_are_skipped() -> None:
    async def scenario() -> list[int]:
        run = Recorder(delay=0.1)
        batcher = DynamicBatcher(run, config(max_batch_size=1), model="m", version=1)
        blocker = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)}))
        await asyncio.sleep(0.02)
        doomed = asyncio.ensure_future(batcher.infer({"x": np.zeros((5, 1), np.float32)}))
        await asyncio.sleep(0)
        doomed.cancel()
        await blocker
        await batcher.close()
        return run.batches

    assert asyncio.run(scenario()) == [1]


def test_one_failing_request_does_not_fail_its_batch() -> None:
    async def scenario() -> list[object]:
        run = Recorder(fail_on=13.0)
        batcher = DynamicBatcher(run, config(), model="m", version=1)
        results = await asyncio.gather(
            batcher.infer({"x": np.full((1, 1), 1.0, np.float32)}),
            batcher.infer({"x": np.full((1, 1), 13.0, np.float32)}),
            batcher.infer({"x": np.full((1, 1), 2.0, np.float32)}),
            return_exceptions=True,
        )
        await batcher.close()
        return results

    good, bad, also_good = asyncio.run(scenario())
    assert isinstance(bad, RuntimeError)
    assert float(good["y"][0, 0]) == 2.0 and float(also_good["y"][0, 0]) == 4.0  # type: ignore[index]


def test_metrics_record_batches_and_queue_time() -> None:
    registry = CollectorRegistry()

    async def scenario() -> None:
        batcher = DynamicBatcher(Recorder(), config(), model="m", version=3, metrics=Metrics(registry))
        await asyncio.gather(*(batcher.infer({"x": np.zeros((2, 1), np.float32)}) for _ in range(4)))
        await batcher.close()

    asyncio.run(scenario())
    assert registry.get_sample_value("myelin_batch_size_count", {"model": "m"}) == 1
    assert registry.get_sample_value("myelin_batch_size_sum", {"model": "m"}) == 8
    assert registry.get_sample_value("myelin_inferences_total", {"model": "m"}) == 8
    assert registry.get_sample_value("myelin_executions_total", {"model": "m"}) == 1
    assert registry.get_sample_value("myelin_queue_duration_seconds_count", {"model": "m"}) == 4
    assert registry.get_sample_value("myelin_queue_depth", {"model": "m"}) == 0
    assert registry.get_sample_value("myelin_inference_duration_seconds_count", {"model": "m", "version": "3"}) == 1


def test_a_cancelled_caller_frees_its_queue_slot_at_once() -> None:
    registry = CollectorRegistry()

    async def scenario() -> list[int]:
        run = Recorder(delay=0.3)
        batcher = DynamicBatcher(
            run, config(max_queue_size=1, max_batch_size=1), model="m", version=1, metrics=Metrics(registry)
        )
        blocker = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)}))
        await asyncio.sleep(0.05)  # running now
        doomed = asyncio.ensure_future(batcher.infer({"x": np.zeros((3, 1), np.float32)}))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.infer({"x": np.zeros((1, 1), np.float32)})
        doomed.cancel()
        await asyncio.sleep(0)
        assert batcher.queue_depth == 0, "the slot is free while the blocker still runs"
        assert registry.get_sample_value("myelin_queue_depth", {"model": "m"}) == 0
        replacement = asyncio.ensure_future(batcher.infer({"x": np.zeros((2, 1), np.float32)}))
        await asyncio.gather(blocker, replacement)
        await batcher.close()
        return run.batches

    assert asyncio.run(scenario()) == [1, 2], "the cancelled request never ran"


def test_a_deadline_that_passes_in_the_queue_ends_the_wait_then() -> None:
    registry = CollectorRegistry()

    async def scenario() -> list[int]:
        run = Recorder()
        # A whole second of queue delay: the deadline, not the batch, must end this caller's wait.
        batcher = DynamicBatcher(
            run,
            config(max_queue_delay_us=1_000_000, adaptive_delay=False),
            model="m",
            version=1,
            metrics=Metrics(registry),
        )
        with pytest.raises(DeadlineExceeded, match="while it was queued"):
            await batcher.infer({"x": np.zeros((1, 1), np.float32)}, timeout=0.05)
        assert batcher.queue_depth == 0
        await batcher.close()
        return run.batches

    assert asyncio.run(scenario()) == []
    assert registry.get_sample_value("myelin_batcher_rejections_total", {"model": "m", "code": "deadline"}) == 1


def test_a_lone_caller_does_not_wait_for_company_that_cannot_come() -> None:
    async def scenario() -> list[int]:
        run = Recorder()
        # A one-second window: were the batcher to sit it out, every call below would miss its deadline.
        batcher = DynamicBatcher(run, config(max_queue_delay_us=1_000_000), model="m", version=1)
        for _ in range(3):
            await batcher.infer({"x": np.zeros((1, 1), np.float32)}, timeout=0.5)
            await asyncio.sleep(0.1)
        together = [batcher.infer({"x": np.zeros((1, 1), np.float32)}) for _ in range(5)]
        await asyncio.gather(*together)
        await batcher.close()
        return run.batches

    assert asyncio.run(scenario()) == [1, 1, 1, 5], "concurrent arrivals still share a batch"


def test_the_worker_runs_queued_batches_while_the_event_loop_is_busy() -> None:
    async def scenario() -> tuple[list[int], list[np.ndarray]]:
        run = Recorder(delay=0.05)
        batcher = DynamicBatcher(run, config(max_batch_size=1), model="m", version=1)
        calls = [asyncio.ensure_future(batcher.infer({"x": np.full((1, 1), i, np.float32)})) for i in range(3)]
        for _ in range(3):  # the calls queue up, then the end of that turn wakes the worker
            await asyncio.sleep(0)
        time.sleep(0.5)  # noqa: ASYNC251 - on purpose: the worker must go from one batch to the next alone
        ran_while_blocked = list(run.batches)
        outputs = [o["y"] for o in await asyncio.gather(*calls)]
        await batcher.close()
        return ran_while_blocked, outputs

    ran_while_blocked, outputs = asyncio.run(scenario())
    assert ran_while_blocked == [1, 1, 1]
    assert [float(y[0, 0]) for y in outputs] == [0.0, 2.0, 4.0], "each caller still gets its own rows"


def test_instances_run_batches_side_by_side_and_drain_on_close() -> None:
    class Overlap(Recorder):
        """Also records how many runs were in flight at once."""

        def __init__(self) -> None:
            super().__init__(delay=0.1)
            self.in_flight = self.most = 0

        def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            try:
                return super().__call__(feeds)
            finally:
                with self.lock:
                    self.in_flight -= 1

    async def scenario(instances: int) -> tuple[int, list[float]]:
        run = Overlap()
        batcher = DynamicBatcher(run, config(max_batch_size=1, instances=instances), model="m", version=1)
        calls = [asyncio.ensure_future(batcher.infer({"x": np.full((1, 1), i, np.float32)})) for i in range(4)]
        await asyncio.sleep(0)
        await batcher.close()  # queued work still finishes
        return run.most, [float((await c)["y"][0, 0]) for c in calls]

    assert asyncio.run(scenario(2)) == (2, [0.0, 2.0, 4.0, 6.0])
    assert asyncio.run(scenario(1)) == (1, [0.0, 2.0, 4.0, 6.0])
