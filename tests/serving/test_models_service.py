"""The Models service, reflection and health on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from harness.servers import ServerThread
from myelin_client import Client, NotFoundError


def test_list_and_get_models(classifier_server: ServerThread, classifier_repository: Path) -> None:
    with Client(classifier_server.target) as client:
        models = {m.name: m for m in client.list_models()}
        assert set(models) == {"mnist-mlp", "mnist-cnn"}
        cnn = client.get_model("mnist-cnn")
        manifest = json.loads((classifier_repository / "mnist-cnn" / "1" / "model.json").read_text())
        assert (cnn.family, cnn.architecture, cnn.version) == ("classifier", "cnn", 1)
        assert cnn.labels == manifest["labels"]
        assert cnn.evaluation["test_accuracy"] == pytest.approx(manifest["evaluation"]["test_accuracy"])
        assert [(v.version, v.state) for v in cnn.versions] == [(1, "READY")]
        assert cnn.execution_provider == "CPUExecutionProvider"
        assert [(t.name, t.datatype, t.shape) for t in cnn.inputs["model"]] == [("image", "FP32", [-1, 28, 28])]
        assert [(t.name, t.shape) for t in cnn.outputs["model"]] == [("probabilities", [-1, 10])]
        assert json.loads(cnn.manifest_json)["dataset"] == manifest["dataset"]
        with pytest.raises(NotFoundError, match="no version 4"):
            client.get_model("mnist-cnn", version=4)
        with pytest.raises(NotFoundError, match="serves: mnist-cnn, mnist-mlp"):
            client.get_model("nope")


def test_reflection_lists_every_service(classifier_server: ServerThread) -> None:
    with grpc.insecure_channel(classifier_server.target) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "myelin_api.v1.Classifier",
        "myelin_api.v1.Models",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_health_per_service(classifier_server: ServerThread) -> None:
    with Client(classifier_server.target) as client:
        assert client.health() == "SERVING"
        assert client.health("myelin_api.v1.Classifier") == "SERVING"
        assert client.health("myelin_api.v1.Models") == "SERVING"
        with pytest.raises(NotFoundError):
            client.health("no.such.Service")
