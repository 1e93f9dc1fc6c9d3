"""Live model updates under load: a new version appears and the old one goes while callers keep calling."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from harness.servers import ServerThread, eventually, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.kserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from myelin_client import Client

ZEROS = np.zeros((2, 28, 28), np.uint8)
PIXELS = np.zeros((1, 28, 28), np.float32)


def publish(repository: Path, model: str, source: int, version: int) -> None:
    """Publish a new version the way a training job should: build it aside, then rename it into place."""
    staging = repository / model / f".staging-{version}"
    shutil.copytree(repository / model / str(source), staging)
    manifest = json.loads((staging / "model.json").read_text())
    (staging / "model.json").write_text(json.dumps({**manifest, "version": version}))
    staging.rename(repository / model / str(version))


class Callers:
    """Threads calling Classify and KServe ModelInfer in a loop, recording every version or failure."""

    def __init__(self, target: str, model: str, threads: int = 3) -> None:
        self.versions: list[int] = []  # every answer, in the order they came
        self.by_thread: dict[int, list[int]] = {}
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._client = Client(target, timeout=10)
        self._channel = grpc.insecure_channel(target)
        self._kserve = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._model = model
        calls = [self._classify] * (threads - 1) + [self._infer]
        self._threads = [
            threading.Thread(target=self._loop, args=(i, call), daemon=True) for i, call in enumerate(calls)
        ]

    def _classify(self) -> int:
        return self._client.classify(ZEROS, model=self._model).version

    def _infer(self) -> int:
        tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 28, 28])
        request = pb.ModelInferRequest(model_name=self._model, inputs=[tensor], raw_input_contents=[PIXELS.tobytes()])
        return int(self._kserve.ModelInfer(request, timeout=10).model_version)

    def _loop(self, index: int, call: Callable[[], int]) -> None:
        mine = self.by_thread[index] = []
        while not self._stop.is_set():
            try:
                version = call()
            except Exception as exc:  # every failure is the test's business
                with self._lock:
                    self.failures.append(exc)
                continue
            with self._lock:
                self.versions.append(version)
                mine.append(version)

    def count(self) -> int:
        with self._lock:
            return len(self.versions)

    def latest(self, n: int) -> list[int]:
        with self._lock:
            return self.versions[-n:]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._client.close()
        self._channel.close()


def test_versions_switch_under_load_without_a_failed_call(fresh_repository: Path) -> None:
    settings = settings_for(fresh_repository, reload_interval_s=0.2)
    with ServerThread(settings) as server, Client(server.target) as admin, Callers(server.target, "mnist-cnn") as load:
        eventually(lambda: load.count() >= 20)
        publish(fresh_repository, "mnist-cnn", source=1, version=2)
        eventually(lambda: load.latest(6) == [2] * 6)
        shutil.rmtree(fresh_repository / "mnist-cnn" / "1")
        eventually(lambda: [v.version for v in admin.get_model("mnist-cnn").versions] == [2])
        served = load.count()
        eventually(lambda: load.count() >= served + 20)  # keep calling after the old version is gone
    assert load.failures == []
    assert load.versions[:20] == [1] * 20 and load.versions[-20:] == [2] * 20
    for answers in load.by_thread.values():
        assert answers == sorted(answers), "once a caller got the new version, it never gets the old one again"
