"""The classifier service on a real server (port 0) through the real SDK."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from harness.servers import ServerThread
from myelin_api.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from myelin_client import Client, InvalidArgumentError, MyelinError, NotFoundError
from myelin_training.data import mnist


@pytest.fixture(scope="module")
def test_digits(data_dir: Path) -> mnist.MnistSplit:
    split = mnist.load_split(data_dir, "test")
    return mnist.MnistSplit(split.images[:64], split.labels[:64])


@pytest.fixture(scope="module")
def client(classifier_server: ServerThread) -> Client:
    with Client(classifier_server.target) as c:
        yield c


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_input_form_gives_the_same_answer(client: Client, test_digits: mnist.MnistSplit, tmp_path: Path) -> None:
    images = test_digits.images[:4]
    path = tmp_path / "digit.png"
    path.write_bytes(png(images[3]))
    as_arrays = client.classify(images, model="mnist-cnn")
    as_floats = client.classify(images.astype(np.float32) / 255, model="mnist-cnn")
    as_mixed = client.classify([png(images[0]), Image.fromarray(images[1]), images[2], path], model="mnist-cnn")
    assert as_arrays.labels == as_floats.labels == as_mixed.labels
    for a, b in zip(as_arrays, as_mixed, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-6)


def test_answer_names_model_version_and_top_k(client: Client, test_digits: mnist.MnistSplit) -> None:
    result = client.classify(test_digits.images[:5], model="mnist-mlp", top_k=3)
    assert (result.model, result.version) == ("mnist-mlp", 1)
    assert len(result) == 5
    for c in result:
        probabilities = [p.probability for p in c.labels]
        assert len(c.labels) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(p.label == str(p.index) for p in c.labels)
    full = client.classify(test_digits.images[:1], model="mnist-mlp", top_k=10)[0]
    assert sum(p.probability for p in full.labels) == pytest.approx(1.0, abs=1e-4)


def test_served_predictions_match_the_exported_graph(
    client: Client, classifier_repository: Path, data_dir: Path
) -> None:
    test = mnist.load_split(data_dir, "test")
    for name in ("mnist-mlp", "mnist-cnn"):
        manifest = json.loads((classifier_repository / name / "1" / "model.json").read_text())
        size = manifest["evaluation"]["test_size"]
        labels = [
            int(c.label)
            for i in range(0, size, 256)
            for c in client.classify(test.images[i : min(size, i + 256)], model=name)
        ]
        accuracy = float(np.mean(np.array(labels) == test.labels[:size]))
        assert accuracy == pytest.approx(manifest["evaluation"]["onnx_test_accuracy"], abs=1e-9)


BAD_REQUESTS = [
    ("empty batch", dict(images=[]), InvalidArgumentError, "images is empty"),
    ("wrong raw shape", dict(images=np.zeros((1, 20, 28), np.uint8)), InvalidArgumentError, "takes 28x28"),
    ("float pixels out of range", dict(images=np.full((1, 28, 28), 3.0)), InvalidArgumentError, r"\[0, 1\]"),
    ("non-finite pixels", dict(images=np.full((1, 28, 28), np.inf)), InvalidArgumentError, "NaN or infinite"),
    ("not an image", dict(images=[b"GIF89a not really"]), InvalidArgumentError, "not a PNG or JPEG"),
    ("batch over the limit", dict(images=np.zeros((257, 28, 28), np.uint8)), InvalidArgumentError, "limit is 256"),
    ("top_k too big", dict(images=np.zeros((1, 28, 28), np.uint8), top_k=11), InvalidArgumentError, "top_k"),
    ("top_k negative", dict(images=np.zeros((1, 28, 28), np.uint8), top_k=-1), InvalidArgumentError, "top_k"),
    ("unknown model", dict(images=np.zeros((1, 28, 28), np.uint8), model="mnist-vit"), NotFoundError, "not found"),
    ("unknown version", dict(images=np.zeros((1, 28, 28), np.uint8), version=9), NotFoundError, "no version 9"),
    (
        "path-like name",
        dict(images=np.zeros((1, 28, 28), np.uint8), model="../mnist-cnn"),
        InvalidArgumentError,
        "not a valid model name",
    ),
    ("negative version", dict(images=np.zeros((1, 28, 28), np.uint8), version=-2), InvalidArgumentError, "version"),
]


@pytest.mark.parametrize(("case", "kwargs", "error", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_clear_status(
    client: Client, case: str, kwargs: dict, error: type[MyelinError], message: str
) -> None:
    kwargs = {"model": "mnist-cnn", **kwargs}
    with pytest.raises(error, match=message) as info:
        client.classify(**kwargs)
    assert "Traceback" not in info.value.details


def test_wrong_dtype_and_unset_images_via_raw_grpc(classifier_server: ServerThread) -> None:
    with grpc.insecure_channel(classifier_server.target) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        model = common_pb2.ModelRef(name="mnist-cnn")
        cases = {
            "dtype must be": classifier_pb2.Image(raw=classifier_pb2.RawImage(height=28, width=28, data=bytes(784))),
            "is empty": classifier_pb2.Image(),
        }
        for message, image in cases.items():
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(classifier_pb2.ClassifyRequest(model=model, images=[image]), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(classifier_pb2.ClassifyRequest(images=[cases["is empty"]]), timeout=10)
        assert (
            info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model.name is required" in info.value.details()
        )


def test_bad_requests_do_not_disturb_good_ones(client: Client, test_digits: mnist.MnistSplit) -> None:
    expected = client.classify(test_digits.images[:8], model="mnist-cnn").labels
    failures: list[BaseException] = []

    def good() -> None:
        try:
            for _ in range(10):
                assert client.classify(test_digits.images[:8], model="mnist-cnn").labels == expected
        except BaseException as exc:
            failures.append(exc)

    def bad() -> None:
        for _, kwargs, error, _ in BAD_REQUESTS * 2:
            with pytest.raises(error):
                client.classify(**{"model": "mnist-cnn", **kwargs})

    threads = [threading.Thread(target=good) for _ in range(4)] + [threading.Thread(target=bad) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert client.health() == "SERVING"


def test_oversized_message_is_refused_by_grpc(classifier_repository: Path) -> None:
    from harness.servers import settings_for

    with (
        ServerThread(settings_for(classifier_repository, max_message_bytes=64 * 1024)) as server,
        Client(server.target) as c,
    ):
        with pytest.raises(MyelinError) as info:
            c.classify([b"\x89PNG" + bytes(100_000)], model="mnist-cnn")
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.classify(np.zeros((1, 28, 28), np.uint8), model="mnist-cnn").model == "mnist-cnn"
