"""Health transitions, live reloads and failures, graceful stop: real servers and processes."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.servers import ServerProcess, ServerThread, settings_for
from myelin_client import Client, UnavailableError

ZEROS = np.zeros((1, 28, 28), np.uint8)


def watch_statuses(target: str, seen: list[str], stop: threading.Event) -> threading.Thread:
    """Record every status the health Watch stream reports until it ends."""

    def run() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                for response in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
                    if stop.is_set():
                        return
            except grpc.RpcError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_not_serving_until_a_model_is_ready_then_serving(tmp_path: Path, classifier_repository: Path) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    with ServerThread(settings_for(repository)) as server, Client(server.target) as client:
        assert client.health() == "NOT_SERVING"
        with pytest.raises(Exception, match="not found"):
            client.classify(ZEROS, model="mnist-cnn")
        shutil.copytree(classifier_repository / "mnist-cnn", repository / "mnist-cnn")
        report = client.reload_models()
        assert report.loaded == ["mnist-cnn/1"] and report.failed == []
        assert client.health() == "SERVING"
        assert client.classify(ZEROS, model="mnist-cnn").version == 1


def test_watcher_loads_new_versions_and_unloads_removed_ones(fresh_repository: Path) -> None:
    settings = settings_for(fresh_repository, reload_interval_s=0.2)
    with ServerThread(settings) as server, Client(server.target) as client:
        assert client.classify(ZEROS, model="mnist-mlp").version == 1
        shutil.copytree(fresh_repository / "mnist-mlp" / "1", fresh_repository / "mnist-mlp" / "2")
        _rewrite_version(fresh_repository / "mnist-mlp" / "2", 2)
        _eventually(lambda: client.classify(ZEROS, model="mnist-mlp").version == 2)
        assert client.classify(ZEROS, model="mnist-mlp", version=1).version == 1
        shutil.rmtree(fresh_repository / "mnist-mlp" / "1")
        _eventually(lambda: [v.version for v in client.get_model("mnist-mlp").versions] == [2])


def test_a_corrupt_new_version_leaves_the_old_one_serving(fresh_repository: Path) -> None:
    with ServerThread(settings_for(fresh_repository)) as server, Client(server.target) as client:
        broken = fresh_repository / "mnist-cnn" / "2"
        shutil.copytree(fresh_repository / "mnist-cnn" / "1", broken)
        _rewrite_version(broken, 2)
        (broken / "model.onnx").write_bytes(b"this is not a protobuf")
        report = client.reload_models()
        assert report.failed == ["mnist-cnn/2"]
        assert client.classify(ZEROS, model="mnist-cnn").version == 1
        states = {v.version: (v.state, v.reason) for v in client.get_model("mnist-cnn").versions}
        assert states[1] == ("READY", "")
        assert states[2][0] == "FAILED" and "onnxruntime cannot load it" in states[2][1]
        with pytest.raises(UnavailableError, match="version 2 is failed"):
            client.classify(ZEROS, model="mnist-cnn", version=2)
        sample = server.registry.get_sample_value
        assert sample("myelin_model_ready", {"model": "mnist-cnn", "version": "2"}) == 0
        assert sample("myelin_model_loads_total", {"model": "mnist-cnn", "code": "failed"}) == 1


def test_a_missing_onnx_file_at_start_fails_only_that_model(fresh_repository: Path) -> None:
    (fresh_repository / "mnist-mlp" / "1" / "model.onnx").unlink()
    with ServerThread(settings_for(fresh_repository)) as server, Client(server.target) as client:
        assert client.health() == "SERVING"
        assert client.classify(ZEROS, model="mnist-cnn").model == "mnist-cnn"
        with pytest.raises(UnavailableError, match="no ready version"):
            client.classify(ZEROS, model="mnist-mlp")


def test_sigterm_goes_not_serving_drains_and_exits(tmp_path: Path, classifier_repository: Path) -> None:
    server = ServerProcess("classifier", classifier_repository, tmp_path)
    try:
        with Client(server.target) as client:
            client.wait_ready(timeout=60)
            seen: list[str] = []
            stop = threading.Event()
            watcher = watch_statuses(server.target, seen, stop)
            _eventually(lambda: seen == ["SERVING"])
            stop.set()
            started = time.monotonic()
            code = server.terminate(timeout=30)
            watcher.join(timeout=10)
        assert code == 0
        assert time.monotonic() - started < 15
        assert seen[:2] == ["SERVING", "NOT_SERVING"]
        log = server.log()
        assert "listening on 127.0.0.1:" in log and "stopping: NOT_SERVING now" in log and "service stopped" in log
    finally:
        server.kill()


def _rewrite_version(path: Path, version: int) -> None:
    import json

    manifest = json.loads((path / "model.json").read_text())
    manifest["version"] = version
    (path / "model.json").write_text(json.dumps(manifest))


def _eventually(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
