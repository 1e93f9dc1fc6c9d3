"""Metrics move as requests are served, on the registry and over HTTP."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.servers import ServerThread, settings_for
from myelin_client import Client, InvalidArgumentError

METHOD = "/myelin_api.v1.Classifier/Classify"


def test_requests_latency_batches_and_model_info(classifier_repository: Path) -> None:
    with ServerThread(settings_for(classifier_repository, metrics_port=0)) as server, Client(server.target) as client:
        sample = server.registry.get_sample_value
        assert sample("myelin_requests_total", {"method": METHOD, "code": "OK"}) is None
        client.classify(np.zeros((3, 28, 28), np.uint8), model="mnist-cnn")
        client.classify(np.zeros((2, 28, 28), np.uint8), model="mnist-cnn")
        with pytest.raises(InvalidArgumentError):
            client.classify([], model="mnist-cnn")
        assert sample("myelin_requests_total", {"method": METHOD, "code": "OK"}) == 2
        assert sample("myelin_requests_total", {"method": METHOD, "code": "INVALID_ARGUMENT"}) == 1
        assert sample("myelin_request_duration_seconds_count", {"method": METHOD}) == 3
        assert sample("myelin_requests_in_flight", {"method": METHOD}) == 0
        assert sample("myelin_inferences_total", {"model": "mnist-cnn"}) == 5
        assert sample("myelin_batch_size_sum", {"model": "mnist-cnn"}) == 5
        assert (
            sample(
                "myelin_model_info",
                {"model": "mnist-cnn", "version": "1", "family": "classifier", "provider": "CPUExecutionProvider"},
            )
            == 1
        )
        assert sample("myelin_model_load_duration_seconds_count", {"model": "mnist-mlp"}) == 1

        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read().decode()
        )
        families = {f.name: f for f in text_string_to_metric_families(body)}
        ok = [
            s for s in families["myelin_requests"].samples if s.labels.get("code") == "OK" and s.name.endswith("_total")
        ]
        assert ok and ok[0].value == 2
        assert (
            "myelin_request_duration_seconds" in families
            and families["myelin_request_duration_seconds"].type == "histogram"
        )
