"""The model repository extension through the stock tritonclient (get_model_repository_index,
get_model_config, unload_model, load_model) and its mirror in the Models service (SDK), with the
batching settings in force shown by GetModel, ModelConfig and the metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.servers import ServerThread, settings_for
from harness.tritonclient import run_tritonclient, tritonclient_job
from myelin_client import Client, NotFoundError

BATCHING = {"max_batch_size": 16, "max_queue_delay_us": 500, "max_queue_size": 100, "instances": 2}
ZEROS = np.zeros((1, 28, 28), np.uint8)


def by_name(index: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {m["name"]: (m.get("version", ""), m.get("state", ""), m.get("reason", "")) for m in index["models"]}


def test_tritonclient_indexes_configures_unloads_and_loads(fresh_repository: Path) -> None:
    settings = settings_for(fresh_repository, batching=BATCHING)
    with ServerThread(settings) as server, Client(server.target) as client:
        steps = [
            {"op": "index"},
            {"op": "config", "name": "mnist-cnn"},
            {"op": "unload", "name": "mnist-cnn"},
            {"op": "index"},
            {"op": "config", "name": "mnist-cnn"},
            {"op": "load", "name": "mnist-cnn"},
            {"op": "index"},
            {"op": "unload", "name": "no-such-model"},
        ]
        report = run_tritonclient(tritonclient_job(server.target, [], repository=steps))
        first, config, unloaded, after_unload, gone, loaded, after_load, unknown = report["repository"]
        assert report["server_metadata"]["ok"]["extensions"] == ["model_repository", "model_configuration"]
        assert by_name(first["ok"]) == {"mnist-cnn": ("1", "READY", ""), "mnist-mlp": ("1", "READY", "")}

        # Triton's form: batched, so dims leave the batch out; the dynamic batcher in force.
        cnn = config["ok"]["config"]
        assert (cnn["name"], cnn["platform"], cnn["backend"]) == ("mnist-cnn", "onnxruntime_onnx", "onnxruntime")
        assert cnn["max_batch_size"] == 16
        assert cnn["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": ["28", "28"]}]
        assert cnn["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["10"]}]
        assert cnn["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
        assert cnn["dynamic_batching"]["default_queue_policy"] == {
            "default_timeout_microseconds": "30000000",
            "max_queue_size": 100,
        }
        assert cnn["instance_group"] == [{"name": "mnist-cnn", "count": 2, "kind": "KIND_CPU"}]
        assert cnn["version_policy"] == {"all": {}} and cnn["default_model_filename"] == "model.onnx"
        assert cnn["parameters"]["family"] == {"string_value": "classifier"}

        # Unloaded: not served, kept out of rescans, listed as such; loaded again on request.
        assert unloaded == {"ok": None}
        assert by_name(after_unload["ok"])["mnist-cnn"][1:] == (
            "UNAVAILABLE",
            "unloaded on request; RepositoryModelLoad serves it again",
        )
        assert gone["status"] == "StatusCode.NOT_FOUND"
        assert loaded == {"ok": None} and by_name(after_load["ok"])["mnist-cnn"][:2] == ("1", "READY")
        assert unknown["status"] == "StatusCode.NOT_FOUND" and "mnist-cnn, mnist-mlp" in unknown["message"]
        assert client.classify(ZEROS, model="mnist-cnn").model == "mnist-cnn"


def test_the_models_service_mirrors_unload_and_load(fresh_repository: Path) -> None:
    with ServerThread(settings_for(fresh_repository, batching=BATCHING)) as server, Client(server.target) as client:
        info = client.get_model("mnist-mlp")
        batching = info.batching["model"]
        assert (batching.enabled, batching.max_batch_size, batching.max_queue_delay_us) == (True, 16, 500)
        assert (batching.max_queue_size, batching.instances) == (100, 2)
        assert client.unload_model("mnist-mlp") == ["mnist-mlp/1"]
        with pytest.raises(NotFoundError):
            client.classify(ZEROS, model="mnist-mlp")
        client.reload_models()  # a rescan leaves it unloaded
        listed = {m.name: m for m in client.list_models()}
        assert [(v.version, v.state) for v in listed["mnist-mlp"].versions] == [(1, "UNLOADED")]
        assert "LoadModel serves it again" in listed["mnist-mlp"].versions[0].reason
        assert client.health() == "SERVING"  # mnist-cnn still serves
        assert client.unload_model("mnist-cnn") == ["mnist-cnn/1"]
        assert client.health() == "NOT_SERVING"
        reloaded = client.load_model("mnist-mlp")
        assert [(v.version, v.state) for v in reloaded.versions] == [(1, "READY")]
        assert client.classify(ZEROS, model="mnist-mlp").model == "mnist-mlp"
        assert client.health() == "SERVING"
        with pytest.raises(NotFoundError, match="not in the repository"):
            client.load_model("mnist-rnn")


def test_the_batching_in_force_is_in_the_metrics(fresh_repository: Path) -> None:
    server = ServerThread(settings_for(fresh_repository, batching=BATCHING)).start()
    labels = {"model": "mnist-cnn", "version": "1"}
    try:
        value = server.registry.get_sample_value
        assert value("myelin_batcher_max_batch_size", labels) == 16
        assert value("myelin_batcher_max_queue_delay_seconds", labels) == pytest.approx(500e-6)
        assert value("myelin_batcher_max_queue_size", labels) == 100
        assert value("myelin_batcher_instances", labels) == 2
        with Client(server.target) as client:
            client.unload_model("mnist-cnn")
        assert value("myelin_batcher_max_batch_size", labels) is None  # gone with its version
    finally:
        server.stop()
