"""KServe ModelInfer reaches every graph of every model: the suite covers each graph and each of its inputs
(the table's value cases and the fuzzing in tests/harness/families/), and the request-wide limits hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from harness.families import CASES
from harness.families.classifier import CLASSIFIER_GRAPHS
from harness.fleet import Fleet
from harness.rpcs import INFER, TOO_BIG, call, graph_request
from harness.servers import ServerThread, settings_for
from myelin_serving.kserve import InferenceProtocol


def served_graphs(server: ServerThread) -> dict[tuple[str, str], set[tuple[str, str, tuple[str | int, ...]]]]:
    """(model, graph) -> its inputs (name, datatype, axes: symbolic names or fixed lengths)."""

    async def collect() -> dict[tuple[str, str], set[tuple[str, str, tuple[str | int, ...]]]]:
        manager = server.server.manager
        return {
            (name, graph_name): {
                (i.name, i.datatype, tuple(d or n for d, n in zip(i.dims, i.shape, strict=True))) for i in graph.inputs
            }
            for name in manager.names()
            for graph_name, graph in manager.get(name).graphs.items()
        }

    return server.run(collect())


@pytest.mark.parametrize("family", list(CASES))
def test_every_graph_and_every_input_is_in_the_suite(fleet: Fleet, family: str) -> None:
    """A graph (or an input) the suite does not know cannot escape the value cases and the fuzzing."""
    server = fleet.get(family).server
    protocol = InferenceProtocol(server.server.manager, max_request_batch=1)
    listed = {}
    for graph in CASES[family].graphs:
        endpoint = server.run(_resolve(protocol, graph.endpoint))
        listed[endpoint] = {(i.name, i.datatype, i.axes) for i in graph.inputs}
    assert listed == served_graphs(server)


async def _resolve(protocol: InferenceProtocol, name: str) -> tuple[str, str]:
    endpoint = protocol.resolve(name, "")
    return endpoint.model.name, endpoint.graph_name


def test_the_numbers_of_one_request_are_bounded_before_decoding(classifier_repository: Path) -> None:
    """max_request_elements counts the declared shapes: typed contents carry a zero in one byte, so the
    message size alone would let a request decode into far more memory than it took on the wire."""
    two = graph_request(CLASSIFIER_GRAPHS[0], {"batch": 2})
    settings = settings_for(classifier_repository, max_request_elements=1000)
    with ServerThread(settings) as server, grpc.insecure_channel(server.target) as channel:
        outcome = call(channel, INFER, two)
        one = call(channel, INFER, graph_request(CLASSIFIER_GRAPHS[0], {"batch": 1}))
    assert outcome.code is TOO_BIG and "1,568 numbers" in outcome.details and "at most 1,000" in outcome.details
    assert one.code is grpc.StatusCode.OK


def test_a_manifest_sets_its_own_rows_limit(tmp_path: Path, classifier_repository: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(classifier_repository, repository)
    path = repository / "mnist-cnn" / "1" / "model.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "serving": {"limits": {"max_rows": 2}}}))
    with ServerThread(settings_for(repository)) as server, grpc.insecure_channel(server.target) as channel:
        three = call(channel, INFER, graph_request(CLASSIFIER_GRAPHS[0], {"batch": 3}))
        two = call(channel, INFER, graph_request(CLASSIFIER_GRAPHS[0], {"batch": 2}, image=np.zeros((2, 28, 28))))
        other = call(channel, INFER, graph_request(CLASSIFIER_GRAPHS[1], {"batch": 3}))
    assert three.code is grpc.StatusCode.INVALID_ARGUMENT and "the limit is 2" in three.details
    assert (two.code, other.code) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
