"""Replicas behind the SDK's client-side load balancing, on this machine: three `myelin-serve`
processes of one family on 127.0.0.1, 127.0.0.2 and 127.0.0.3 and one port, one AsyncClient with
the target `ipv4:127.0.0.1:P,127.0.0.2:P,127.0.0.3:P` and its default options (round robin, health
checking, retries on UNAVAILABLE), under closed-loop load.

Nothing here depends on timing beyond generous time-outs: each phase waits for a number of calls,
not for a number of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.load import ClosedLoop
from harness.replicas import ReplicaSet, channel_attempts
from harness.servers import ENDLESS_TOKENS
from myelin_client import AsyncClient, MyelinError

pytestmark = pytest.mark.slow
CLASSIFY = "/myelin_api.v1.Classifier/Classify"
GENERATE = "/myelin_api.v1.Generator/Generate"
DIGIT = np.zeros((1, 28, 28), np.uint8)
CONCURRENCY = 8
# Short, so that the connection ageing (clients re-resolve when a connection closes) runs during
# the test, under load, as it does in production every few minutes.
ENV = {"MYELIN_MAX_CONNECTION_AGE_S": "2", "MYELIN_GRACE_PERIOD_S": "5", "MYELIN_RELOAD_INTERVAL_S": "0"}


def served(replicas: ReplicaSet, method: str) -> list[float]:
    return [r.metric("myelin_requests_total", method=method, code="OK") if r.alive else 0.0 for r in replicas.replicas]


def on_three_replicas(
    family: str,
    repository: Path,
    state: Path,
    env: dict[str, str],
    scenario: Callable[[ReplicaSet], Coroutine[Any, Any, None]],
) -> None:
    with ReplicaSet(family, repository, state, 3, env) as replicas:
        asyncio.run(scenario(replicas))


def test_classifier_replicas_share_the_load_and_survive_sigterm_sigkill_and_a_restart(
    classifier_repository: Path, tmp_path: Path
) -> None:
    on_three_replicas("classifier", classifier_repository, tmp_path, ENV, classifier_scenario)


async def classifier_scenario(replicas: ReplicaSet) -> None:
    draining, killed, survivor = replicas.replicas
    async with AsyncClient(replicas.target, timeout=20) as client:
        await client.wait_ready()
        load = ClosedLoop(lambda: client.classify(DIGIT, model="mnist-mlp"), CONCURRENCY)

        # Round robin: every replica serves 20% to 45% of the calls.
        await load.wait_calls(900)
        counts = await asyncio.to_thread(served, replicas, CLASSIFY)
        shares = [c / sum(counts) for c in counts]
        assert all(0.20 <= s <= 0.45 for s in shares), f"shares {shares} of {counts}"

        # SIGTERM: the replica says NOT_SERVING, clients move on, it drains and exits. No call fails.
        draining.send(signal.SIGTERM)
        assert await asyncio.to_thread(draining.wait) == 0
        await load.wait_calls(300, since=time.monotonic())
        assert not load.failed(), Counter(c.code for c in load.failed())

        # SIGKILL with calls certainly in flight on it: frozen first (SIGSTOP), so that the callers
        # whose turn sends them there wait on it; then killed. The retries answer all of them.
        before_calls, before = channel_attempts(replicas.target)
        killed.send(signal.SIGSTOP)
        await asyncio.sleep(1.0)
        kill_at = time.monotonic()
        await asyncio.to_thread(killed.kill)
        await load.wait_calls(300, since=time.monotonic())
        after_calls, after = channel_attempts(replicas.target)
        assert not load.failed(), Counter(c.code for c in load.failed())
        stuck = [c for c in load.calls if c.started < kill_at - 0.5 and c.ended > kill_at]
        assert stuck and all(c.code == "OK" for c in stuck)
        # Counted at the client (gRPC's channelz): the attempts that failed on the killed replica
        # (its calls; its health-check stream too), none of which failed a call of the application.
        failed_attempts = after[killed.address].failed - before[killed.address].failed
        assert failed_attempts >= len(stuck), (failed_attempts, len(stuck))
        assert after_calls.failed == before_calls.failed

        # A fresh replica in the killed one's place gets calls again once the client reconnects.
        fresh = await asyncio.to_thread(replicas.restart, 1)
        deadline = time.monotonic() + 60
        while fresh.metric("myelin_requests_total", method=CLASSIFY, code="OK") == 0:
            assert time.monotonic() < deadline, "the fresh replica got no call in 60 s"
            await asyncio.sleep(0.2)
        await load.stop()
    assert not load.failed(), Counter(c.code for c in load.failed())
    assert survivor.alive


GENERATOR_ENV = {**ENV, "MYELIN_GENERATION__MAX_CONTEXT_TOKENS": str(ENDLESS_TOKENS + 64)}
GRU = "generator-gru-shakespeare"


class Stream:
    """One generation read to its end in a task: chunks received, and how it ended."""

    def __init__(self, client: AsyncClient, max_new_tokens: int) -> None:
        self.chunks = 0
        self.code = ""  # "" while running, "OK" when finished, else the status code's name
        self.ended_at = 0.0
        self._stream = client.generate("ROMEO:", model=GRU, max_new_tokens=max_new_tokens, temperature=0.8)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for _ in self._stream:
                self.chunks += 1
            self.code = "OK"
        except MyelinError as exc:
            self.code = exc.code.name
        self.ended_at = time.monotonic()

    async def close(self) -> None:
        self._stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # what a cancelled grpc.aio stream raises
            await self.task


async def until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.05)


def test_generator_streams_on_a_killed_replica_fail_with_unavailable_and_no_other_stream_notices(
    generator_repository: Path, tmp_path: Path
) -> None:
    on_three_replicas("generator", generator_repository, tmp_path, GENERATOR_ENV, generator_scenario)


async def generator_scenario(replicas: ReplicaSet) -> None:
    killed = replicas.replicas[0]
    async with AsyncClient(replicas.target, timeout=120) as client:
        await client.wait_ready()
        # Until every replica has answered: round robin then has all three to place streams on.
        while not all(await asyncio.to_thread(served, replicas, "/myelin_api.v1.Generator/Complete")):
            await client.complete("ROMEO:", model=GRU, max_new_tokens=4)
        streams = [Stream(client, ENDLESS_TOKENS) for _ in range(6)]
        await until(lambda: all(s.chunks for s in streams), "every stream has its first chunk")
        in_flight = await asyncio.to_thread(
            lambda: [r.metric("myelin_requests_in_flight", method=GENERATE) for r in replicas.replicas]
        )
        assert sum(in_flight) == 6 and in_flight[0] >= 1, in_flight

        killed_at = time.monotonic()
        await asyncio.to_thread(killed.kill)
        await until(lambda: sum(1 for s in streams if s.code) == in_flight[0], "the killed replica's streams end")
        ended = [s for s in streams if s.code]
        assert [s.code for s in ended] == ["UNAVAILABLE"] * int(in_flight[0])
        assert max(s.ended_at for s in ended) - killed_at < 10  # at once, give or take a loaded machine
        # The others go on producing chunks, and new streams go to the live replicas.
        running = [s for s in streams if not s.code]
        progress = {id(s): s.chunks for s in running}
        fresh = [Stream(client, 16) for _ in range(4)]
        await asyncio.gather(*(s.task for s in fresh))
        assert [s.code for s in fresh] == ["OK"] * 4
        await until(lambda: all(s.chunks > progress[id(s)] + 3 for s in running), "the other streams go on")
        assert not any(s.code for s in running)
        for s in running:
            await s.close()
