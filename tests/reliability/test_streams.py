"""Streams and shutdown: a Watch without a deadline stays open, SIGTERM ends it at once, a caller that
leaves a stream is counted CANCELLED without a log line, and during shutdown every call ends answered
or UNAVAILABLE, never CANCELLED or INTERNAL, run after run."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.families.classifier import CLASSIFIER_GRAPHS
from harness.fleet import TALLY
from harness.rpcs import graph_request
from harness.servers import (
    ENDLESS_TOKENS,
    LONG_GENERATION,
    ServerProcess,
    ServerThread,
    burst_then_sigterm,
    settings_for,
)
from myelin_client import Client, DeadlineExceededError

GENERATE = "/myelin_api.v1.Generator/Generate"
GRU = "generator-gru-shakespeare"
# SIGTERM during a burst of concurrent calls, this many times (MYELIN_SHUTDOWN_RUNS for a longer loop).
SHUTDOWN_RUNS = int(os.environ.get("MYELIN_SHUTDOWN_RUNS", "4"))


def test_a_watch_without_a_deadline_outlives_the_default_deadline(classifier_repository: Path) -> None:
    settings = settings_for(classifier_repository, default_deadline_s=0.3)
    with ServerThread(settings) as server, grpc.insecure_channel(server.target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        seen = [next(stream).status]
        time.sleep(1.0)  # three default deadlines
        assert stream.is_active()
        stream.cancel()
    assert seen == [health_pb2.HealthCheckResponse.SERVING]


def test_sigterm_ends_open_watch_streams_at_once(tmp_path: Path, classifier_repository: Path) -> None:
    """The Watch sees NOT_SERVING, then its stream ends OK; the server exits long before its grace period."""
    grace = 30
    server = ServerProcess("classifier", classifier_repository, tmp_path, env={"MYELIN_GRACE_PERIOD_S": str(grace)})
    seen: list[int] = []
    ended: list[str] = []
    try:
        with Client(server.target) as client:
            client.wait_ready(timeout=60)

        def watch() -> None:
            with grpc.insecure_channel(server.target) as channel:
                try:
                    for response in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()):
                        seen.append(response.status)
                    ended.append("OK")
                except grpc.RpcError as error:
                    ended.append(error.code().name)

        watchers = [threading.Thread(target=watch) for _ in range(3)]
        for watcher in watchers:
            watcher.start()
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        code = server.terminate(timeout=grace + 30)
        elapsed = time.monotonic() - started
        for watcher in watchers:
            watcher.join(timeout=10)
    finally:
        server.kill()
    assert code == 0 and elapsed < grace / 3, elapsed
    assert ended == ["OK"] * 3
    assert sorted(seen) == sorted(
        [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING] * 3
    )


def test_a_caller_leaving_a_stream_is_cancelled_without_an_error_line(
    generator_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: counted INTERNAL now and then, with 'GeneratorExit' and 'Task exception was never retrieved'."""
    caplog.set_level(logging.INFO)
    settings = settings_for(generator_repository, service="generator", generation=LONG_GENERATION)
    with ServerThread(settings) as server, Client(server.target) as client:
        for _ in range(8):
            with client.generate("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS) as stream:
                for i, _chunk in enumerate(stream):
                    if i == 2:
                        break
        sample = server.registry.get_sample_value
        deadline = time.monotonic() + 10
        while sample("myelin_requests_in_flight", {"method": GENERATE}) and time.monotonic() < deadline:
            time.sleep(0.02)
        codes = {c: sample("myelin_requests_total", {"method": GENERATE, "code": c}) for c in ("CANCELLED", "INTERNAL")}
        records = [r for r in caplog.records if r.name.startswith("myelin_serving") or r.name == "asyncio"]
    assert codes == {"CANCELLED": 8, "INTERNAL": None}
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    during = [r for r in records if "cancel" in r.getMessage().lower()]
    assert len(during) <= 8


def test_a_stream_whose_deadline_passes_counts_as_deadline_exceeded(generator_repository: Path) -> None:
    settings = settings_for(generator_repository, service="generator", generation=LONG_GENERATION)
    with ServerThread(settings) as server, Client(server.target) as client:
        with pytest.raises(DeadlineExceededError):
            for _chunk in client.generate("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS, timeout=0.5):
                pass
        sample = server.registry.get_sample_value
        deadline = time.monotonic() + 10
        while sample("myelin_requests_in_flight", {"method": GENERATE}) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sample("myelin_requests_total", {"method": GENERATE, "code": "DEADLINE_EXCEEDED"}) == 1
        assert sample("myelin_requests_total", {"method": GENERATE, "code": "CANCELLED"}) is None


def test_sigterm_during_a_burst_ends_every_call_ok_or_unavailable_run_after_run(
    tmp_path: Path, classifier_repository: Path
) -> None:
    """600 KServe calls in flight or arriving: the accepted ones answered, the others UNAVAILABLE (a retry
    policy retries those), never CANCELLED, which gRPC gave the calls it still held when it stopped."""
    request = graph_request(CLASSIFIER_GRAPHS[0], {"batch": 1}).SerializeToString()
    totals: Counter[str] = Counter()
    for run in range(SHUTDOWN_RUNS):
        # No drain delay: the burst must meet the refusal itself, not only the delay's last calls served.
        env = {"MYELIN_GRACE_PERIOD_S": "10", "MYELIN_DRAIN_DELAY_S": "0"}
        server = ServerProcess("classifier", classifier_repository, tmp_path, env=env)
        try:
            with Client(server.target) as client:
                client.wait_ready(timeout=60)
            burst = burst_then_sigterm(server.target, server.process, request, calls=600, delay=0.02 * (run % 5))
            codes, exit_s = asyncio.run(burst)
            TALLY["faults"] += 1
        finally:
            server.kill()
        totals.update(codes)
        assert set(codes) <= {"OK", "UNAVAILABLE"}, (run, codes)
        assert server.process.returncode == 0 and exit_s < 10, exit_s
    assert sum(totals.values()) == 600 * SHUTDOWN_RUNS and totals["UNAVAILABLE"] > 0


def test_an_open_reflection_stream_does_not_hold_the_stop(tmp_path: Path, classifier_repository: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    server = ServerProcess("classifier", classifier_repository, tmp_path, env={"MYELIN_GRACE_PERIOD_S": "30"})
    questions: list[reflection_pb2.ServerReflectionRequest] = []
    asked = threading.Event()
    try:
        with Client(server.target) as client:
            client.wait_ready(timeout=60)
        with grpc.insecure_channel(server.target) as channel:

            def requests():  # type: ignore[no-untyped-def]
                yield reflection_pb2.ServerReflectionRequest(list_services="")
                asked.wait()  # the caller keeps its stream open, asking nothing more

            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests())
            questions.append(next(stream))
            started = time.monotonic()
            code = server.terminate(timeout=60)
            elapsed = time.monotonic() - started
            asked.set()
            rest = list(stream)
    finally:
        asked.set()
        server.kill()
    assert code == 0 and elapsed < 10, elapsed
    assert rest == [] and questions[0].list_services_response.service
