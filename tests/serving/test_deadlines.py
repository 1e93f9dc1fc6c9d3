"""Deadlines and cancellation end to end: a real server, real gRPC calls, the batcher's own metrics.

A one-second max_queue_delay keeps a lone request waiting in the batcher, so what ends its wait is
the deadline or the cancellation under test, never a batch running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from harness.servers import ServerThread, eventually, settings_for
from myelin_api.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from myelin_client import Client, DeadlineExceededError
from myelin_serving.settings import BatchingSettings

CLASSIFY = "/myelin_api.v1.Classifier/Classify"
# adaptive_delay off: a lone request waits out the whole window instead of running at once.
SLOW_BATCHES = BatchingSettings(max_queue_delay_us=1_000_000, max_batch_size=64, max_queue_size=1, adaptive_delay=False)


def request(model: str = "mnist-cnn") -> classifier_pb2.ClassifyRequest:
    raw = classifier_pb2.RawImage(height=28, width=28, dtype=common_pb2.DATA_TYPE_UINT8, data=bytes(784))
    return classifier_pb2.ClassifyRequest(model=common_pb2.ModelRef(name=model), images=[classifier_pb2.Image(raw=raw)])


def executions(server: ServerThread) -> float:
    return server.registry.get_sample_value("myelin_executions_total", {"model": "mnist-cnn"}) or 0.0


@pytest.fixture
def slow_server(classifier_repository: Path) -> Iterator[ServerThread]:
    with ServerThread(settings_for(classifier_repository, batching=SLOW_BATCHES, default_deadline_s=0.3)) as server:
        yield server


def test_an_expired_deadline_is_refused_and_never_computed(slow_server: ServerThread) -> None:
    before = executions(slow_server)
    with Client(slow_server.target) as client, pytest.raises(DeadlineExceededError):
        client.classify(np.zeros((1, 28, 28), np.uint8), timeout=1e-6)
    assert executions(slow_server) == before
    with Client(slow_server.target) as client:
        assert client.health() == "SERVING"


def test_a_deadline_that_passes_while_queued_is_dropped_before_compute(slow_server: ServerThread) -> None:
    before = executions(slow_server)
    with Client(slow_server.target) as client, pytest.raises(DeadlineExceededError):
        client.classify(np.zeros((1, 28, 28), np.uint8), timeout=0.3)
    eventually(lambda: slow_server.registry.get_sample_value("myelin_queue_depth", {"model": "mnist-cnn"}) == 0)
    assert executions(slow_server) == before


def test_calls_without_a_deadline_get_the_server_default(slow_server: ServerThread) -> None:
    before = executions(slow_server)
    with grpc.insecure_channel(slow_server.target) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request())  # no timeout: the server's default_deadline_s (0.3 s) applies
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in info.value.details()
    assert executions(slow_server) == before
    counted = slow_server.registry.get_sample_value
    eventually(lambda: counted("myelin_requests_total", {"method": CLASSIFY, "code": "DEADLINE_EXCEEDED"}) == 1)


def test_a_cancelled_call_frees_its_batcher_slot(slow_server: ServerThread) -> None:
    gauge = slow_server.registry.get_sample_value
    with grpc.insecure_channel(slow_server.target) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        first = stub.Classify.future(request(), timeout=30)
        eventually(lambda: gauge("myelin_queue_depth", {"model": "mnist-cnn"}) == 1)
        first.cancel()
        eventually(lambda: gauge("myelin_requests_in_flight", {"method": CLASSIFY}) == 0)
        assert gauge("myelin_queue_depth", {"model": "mnist-cnn"}) == 0
        # The queue holds one request: had the cancelled one kept its slot, this would be refused
        # with RESOURCE_EXHAUSTED at once; instead it is queued and waits out its own deadline.
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request(), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert first.cancelled()
    assert executions(slow_server) == 0
