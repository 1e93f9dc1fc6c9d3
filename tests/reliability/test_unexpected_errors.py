"""An exception that still escapes (a graph that raises on some values no limit knows of) is INTERNAL for
the caller and one log line per cause and minute for the operator, not a traceback per call: eight
callers doing it wrote 284,480 log lines (21 MB) in 10 s before."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.families.classifier import CLASSIFIER_GRAPHS
from harness.rpcs import INFER, call, graph_request
from harness.servers import ServerThread, settings_for
from myelin_serving.interceptors import ErrorLog

INTERCEPTORS = "myelin_serving.interceptors"


def raising_classifier(path: Path) -> None:
    """A graph with a classifier's signature that raises when a pixel reaches 10: the brightest pixel
    of each image picks a row of a 10-row table ((B, 28, 28) -> (B, 10))."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])
    table = numpy_helper.from_array(np.eye(10, dtype=np.float32), "table")
    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMax", ["image", "axes"], ["brightest"], keepdims=0),
        helper.make_node("Cast", ["brightest"], ["row"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "row"], ["probabilities"], axis=0),
    ]
    graph = helper.make_graph(nodes, "raising-classifier", [image], [out], initializer=[table, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_an_escaping_exception_is_internal_and_logged_once(
    fresh_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raising_classifier(fresh_repository / "mnist-mlp" / "1" / "model.onnx")
    bright = np.full((1, 28, 28), 100.0)
    request = graph_request(CLASSIFIER_GRAPHS[1], {"batch": 1}, image=bright)
    with ServerThread(settings_for(fresh_repository)) as server, grpc.insecure_channel(server.target) as channel:
        fine = call(channel, INFER, graph_request(CLASSIFIER_GRAPHS[1], {"batch": 1}))
        codes: list[grpc.StatusCode] = []

        def caller() -> None:
            for _ in range(25):
                outcome = call(channel, INFER, request)
                codes.append(outcome.code)
                assert "Traceback" not in outcome.details

        callers = [threading.Thread(target=caller) for _ in range(8)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
        sample = server.registry.get_sample_value
        counted = sample("myelin_requests_total", {"method": INFER, "code": "INTERNAL"})
    assert fine.code is grpc.StatusCode.OK
    assert set(codes) == {grpc.StatusCode.INTERNAL} and len(codes) == 200 and counted == 200
    lines = [r for r in caplog.records if r.name == INTERCEPTORS]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR and lines[0].exc_info is not None
    assert "logged once a minute" in lines[0].getMessage()


class QuickErrorLog(ErrorLog):
    WINDOW_S = 0.2  # the same rule as in the server, over a fifth of a second instead of a minute


def test_each_cause_is_logged_once_per_window_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    def fail(value: int) -> ValueError:
        try:
            raise ValueError(f"bad value {value}")  # one line raises them all: one cause, whatever the value
        except ValueError as exc:
            return exc

    def fail_elsewhere() -> KeyError:
        try:
            raise KeyError("another cause")
        except KeyError as exc:
            return exc

    errors = QuickErrorLog()
    caplog.set_level(logging.ERROR, logger=INTERCEPTORS)
    for value in range(100):
        errors.report("/a.Service/Method", fail(value))
    errors.report("/a.Service/Method", fail_elsewhere())
    errors.report("/a.Service/Other", fail(0))
    assert len(caplog.records) == 3
    time.sleep(0.25)
    errors.report("/a.Service/Method", fail(7))
    assert len(caplog.records) == 4
    assert "100 time(s)" in caplog.records[-1].getMessage() and caplog.records[-1].exc_info is None
