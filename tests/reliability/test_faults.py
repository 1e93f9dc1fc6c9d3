"""Faults injected into live servers: broken model files at start-up and during a live update, SIGTERM
under load, callers that vanish mid-call.

What tests/serving/test_lifecycle.py covers already (a missing ONNX file, a corrupt new version, SIGTERM
draining an idle server) is not repeated; these add every way a graph can be broken, faults under
traffic, and what happens to the requests in flight.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.families import CASES
from harness.families.classifier import CLASSIFY, ZEROS, classify
from harness.fleet import TALLY, GoodTraffic
from harness.rpcs import call
from harness.servers import ServerProcess, ServerThread, eventually, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_client import Client, UnavailableError
from myelin_serving.settings import BatchingSettings

ZERO_IMAGES = np.zeros((1, 28, 28), np.uint8)


def wrong_signature_graph(path: Path) -> None:
    """A valid ONNX graph that is not a classifier: (B, 5) -> (B, 5)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 5])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "not-a-classifier", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "missing": lambda p: p.unlink(),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"this is not a protobuf" * 100),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "wrong signature": wrong_signature_graph,
}
LOG_REASONS = {
    "missing": "ONNX file not found",
    "empty": "onnxruntime cannot load it",
    "garbage": "onnxruntime cannot load it",
    "truncated": "onnxruntime cannot load it",
    "wrong signature": "a classifier graph takes one FP32 input of shape (B, H, W)",
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_broken_graph_at_start_up_fails_only_that_model_with_a_clear_log_line(
    fresh_repository: Path, corruption: str, caplog: pytest.LogCaptureFixture
) -> None:
    CORRUPTIONS[corruption](fresh_repository / "mnist-mlp" / "1" / "model.onnx")
    TALLY["faults"] += 1
    caplog.set_level(logging.INFO, logger="myelin_serving")
    with ServerThread(settings_for(fresh_repository)) as server, Client(server.target) as client:
        assert client.health() == "SERVING"
        assert client.classify(ZERO_IMAGES, model="mnist-cnn").model == "mnist-cnn"
        with pytest.raises(UnavailableError, match="no ready version"):
            client.classify(ZERO_IMAGES, model="mnist-mlp")
        (status,) = client.get_model("mnist-mlp").versions
        assert status.state == "FAILED" and LOG_REASONS[corruption] in status.reason
        with grpc.insecure_channel(server.target) as channel:
            ready = call(channel, "/inference.GRPCInferenceService/ModelReady", pb.ModelReadyRequest(name="mnist-mlp"))
        assert not pb.ModelReadyResponse.FromString(ready.responses[0]).ready
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "mnist-mlp/1 failed to load" in r.message]
    assert len(failures) == 1 and LOG_REASONS[corruption] in failures[0].message
    assert "1 model version(s) ready, 1 failed" in caplog.text


def test_a_half_copied_new_version_under_load_fails_alone_then_loads_once_complete(fresh_repository: Path) -> None:
    """A version folder published non-atomically (manifest first, graph still being written): the old
    version serves throughout, the new one is FAILED while incomplete and loads when the file is whole."""
    settings = settings_for(fresh_repository, reload_interval_s=0.1)
    with ServerThread(settings) as server, Client(server.target) as client:
        traffic = GoodTraffic(server.target, CASES["classifier"])
        try:
            graph = (fresh_repository / "mnist-cnn" / "1" / "model.onnx").read_bytes()
            new = fresh_repository / "mnist-cnn" / "2"
            new.mkdir()
            manifest = json.loads((fresh_repository / "mnist-cnn" / "1" / "model.json").read_text())
            (new / "model.json").write_text(json.dumps({**manifest, "version": 2}))
            (new / "model.onnx").write_bytes(graph[: len(graph) // 3])
            TALLY["faults"] += 1
            eventually(lambda: {v.version: v.state for v in client.get_model("mnist-cnn").versions}.get(2) == "FAILED")
            assert client.classify(ZERO_IMAGES, model="mnist-cnn").version == 1
            (new / "model.onnx").write_bytes(graph)
            eventually(lambda: client.classify(ZERO_IMAGES, model="mnist-cnn").version == 2)
            assert [v.state for v in client.get_model("mnist-cnn").versions] == ["READY", "READY"]
        finally:
            traffic.stop()
    TALLY["well-formed"] += traffic.sent
    TALLY["well-formed failed"] += len(traffic.failures)
    assert traffic.sent > 0 and traffic.failures == []


class Caller(threading.Thread):
    """Classifies in a loop on its own channel until refused; records (sent, done, status) per call."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.calls: list[tuple[float, float, grpc.StatusCode]] = []

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            while True:
                sent = time.monotonic()
                outcome = call(channel, CLASSIFY, classify(ZEROS), timeout=30)
                self.calls.append((sent, time.monotonic(), outcome.code))
                if outcome.code is not grpc.StatusCode.OK:
                    return


def in_flight(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    method = 'method="/myelin_api.v1.Classifier/Classify"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("myelin_requests_in_flight{") and method in line
    )


def test_sigterm_under_load_finishes_what_was_accepted_and_refuses_the_rest(
    tmp_path: Path, classifier_repository: Path
) -> None:
    grace = 5
    env = {
        # Every request waits 300 ms in the batcher, so many are in flight when SIGTERM comes.
        "MYELIN_BATCHING__ADAPTIVE_DELAY": "false",
        "MYELIN_BATCHING__MAX_QUEUE_DELAY_US": "300000",
        "MYELIN_GRACE_PERIOD_S": str(grace),
    }
    server = ServerProcess("classifier", classifier_repository, tmp_path, env=env)
    try:
        with Client(server.target) as client:
            client.wait_ready(timeout=60)
        callers = [Caller(server.target) for _ in range(8)]
        for caller in callers:
            caller.start()
        eventually(lambda: all(len(c.calls) >= 2 for c in callers))
        eventually(lambda: in_flight(server.metrics_port) >= 4)
        signalled = time.monotonic()
        TALLY["faults"] += 1
        code = server.terminate(timeout=grace + 20)
        for caller in callers:
            caller.join(timeout=30)
        log = server.log()
    finally:
        server.kill()
    assert code == 0 and "stopping: NOT_SERVING now" in log and "service stopped" in log
    calls = [c for caller in callers for c in caller.calls]
    statuses = {status for _, _, status in calls}
    assert statuses <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, statuses
    # Accepted before the signal, answered after it: every one of them finished.
    spanning = [status for sent, done, status in calls if sent < signalled < done]
    TALLY["in flight at SIGTERM"] += len(spanning)
    TALLY["lost"] += sum(status is not grpc.StatusCode.OK for status in spanning)
    assert spanning and set(spanning) == {grpc.StatusCode.OK}, spanning
    # Every caller ended refused, and nothing sent after the signal was answered OK after the drain.
    assert all(caller.calls[-1][2] is grpc.StatusCode.UNAVAILABLE for caller in callers)
    with grpc.insecure_channel(server.target) as channel:
        assert call(channel, CLASSIFY, classify(ZEROS), timeout=5).code is grpc.StatusCode.UNAVAILABLE


# One request at a time, held a whole second in the batcher: what ends its wait is the caller leaving.
HOLD = BatchingSettings(max_queue_delay_us=1_000_000, max_queue_size=1, adaptive_delay=False)
CALLER = """
import sys, grpc
from myelin_api.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
raw = classifier_pb2.RawImage(height=28, width=28, dtype=common_pb2.DATA_TYPE_UINT8, data=bytes(784))
model = common_pb2.ModelRef(name="mnist-cnn")
request = classifier_pb2.ClassifyRequest(model=model, images=[classifier_pb2.Image(raw=raw)])
with grpc.insecure_channel(sys.argv[1]) as channel:
    classifier_pb2_grpc.ClassifierStub(channel).Classify(request, timeout=600)
"""


def test_a_caller_that_dies_mid_call_frees_its_work(classifier_repository: Path) -> None:
    """SIGKILL, not a polite cancel: the connection just goes. The request leaves the queue unrun."""
    with ServerThread(settings_for(classifier_repository, batching=HOLD, default_deadline_s=600)) as server:
        sample = server.registry.get_sample_value
        method = {"method": CLASSIFY}
        executions = sample("myelin_executions_total", {"model": "mnist-cnn"}) or 0.0
        child = subprocess.Popen([sys.executable, "-c", CALLER, server.target])
        try:
            eventually(lambda: sample("myelin_queue_depth", {"model": "mnist-cnn"}) == 1)
            child.kill()
            child.wait(timeout=10)
            TALLY["faults"] += 1
            eventually(lambda: sample("myelin_requests_in_flight", method) == 0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        assert sample("myelin_queue_depth", {"model": "mnist-cnn"}) == 0
        assert sample("myelin_executions_total", {"model": "mnist-cnn"}) == executions
        assert sample("myelin_requests_total", {**method, "code": "CANCELLED"}) == 1
        with Client(server.target) as client:  # the only queue slot is free again
            assert client.classify(ZERO_IMAGES, model="mnist-cnn").model == "mnist-cnn"


def test_a_killed_server_exits_non_zero_so_restart_policies_apply(tmp_path: Path, classifier_repository: Path) -> None:
    """Compose (restart: unless-stopped) and Kubernetes restart a container whose process dies; a crash
    and a failed start must not look like a clean exit."""
    server = ServerProcess("classifier", classifier_repository, tmp_path)
    try:
        server.process.kill()
        TALLY["faults"] += 2  # this crash, and the port clash below
        assert server.process.wait(timeout=10) != 0
    finally:
        server.kill()
    busy = ServerProcess("classifier", classifier_repository, tmp_path)
    try:
        with Client(busy.target) as client:
            client.wait_ready(timeout=60)
        clash = subprocess.run(
            [
                str(Path(sys.executable).parent / "myelin-serve"),
                "classifier",
                "--repository",
                str(classifier_repository),
                "--port",
                str(busy.port),
                "--metrics-port",
                "-1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        busy.kill()
    assert clash.returncode != 0 and f"could not listen on 127.0.0.1:{busy.port}" in clash.stderr
