"""The classifier family (mnist-mlp, mnist-cnn): Classify."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st
from PIL import Image

from harness import rpcs
from harness.codes import INVALID, MESSAGE_LIMIT, NOT_FOUND, TOO_BIG, UNDECODABLE
from harness.rpcs import Bad, Graph, GraphInput, Request, ServiceCase, invalid_names, kserve_bad, kserve_infer
from harness.strategies import model_names
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import classifier_pb2, common_pb2
from myelin_client import Client
from myelin_training.data import mnist


def png(width: int, height: int, *, body: bytes | None = None) -> bytes:
    """A greyscale PNG of the declared size; `body` replaces the pixel data (a bomb declares a lot, sends little)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = body if body is not None else zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def classify(*images: classifier_pb2.Image, model: str = "mnist-cnn", **fields: Any) -> classifier_pb2.ClassifyRequest:
    return classifier_pb2.ClassifyRequest(model=common_pb2.ModelRef(name=model), images=list(images), **fields)


def _raw(
    data: bytes, dtype: int = common_pb2.DATA_TYPE_UINT8, height: int = 28, width: int = 28
) -> classifier_pb2.Image:
    return classifier_pb2.Image(raw=classifier_pb2.RawImage(height=height, width=width, dtype=dtype, data=data))


def _floats(*values: float) -> bytes:
    pixels = np.zeros(784, "<f4")
    pixels[: len(values)] = values
    return pixels.tobytes()


CLASSIFY = "/myelin_api.v1.Classifier/Classify"
BIG_PNG = png(4096, 4096)
ZEROS = _raw(bytes(784))


def classifier_bad() -> tuple[Bad, ...]:
    f32 = common_pb2.DATA_TYPE_FLOAT32
    bad = [
        Bad("no images", CLASSIFY, classify(), INVALID, "images is empty"),
        Bad("unset image", CLASSIFY, classify(classifier_pb2.Image()), INVALID, "images[0] is empty"),
        Bad(
            "empty encoded",
            CLASSIFY,
            classify(classifier_pb2.Image(encoded=b"")),
            INVALID,
            "images[0].encoded is empty",
        ),
        Bad(
            "not an image",
            CLASSIFY,
            classify(classifier_pb2.Image(encoded=b"GIF89a" + bytes(40))),
            INVALID,
            "is not a PNG or JPEG",
        ),
        Bad(
            "truncated png",
            CLASSIFY,
            classify(classifier_pb2.Image(encoded=png(28, 28)[:-20])),
            INVALID,
            "could not be decoded",
        ),
        Bad(
            "png bomb",
            CLASSIFY,
            classify(classifier_pb2.Image(encoded=png(100_000, 100_000, body=b""))),
            INVALID,
            "too many pixels to decode safely",
        ),
        Bad(
            "png side over 4096",
            CLASSIFY,
            classify(classifier_pb2.Image(encoded=png(5000, 20, body=b""))),
            INVALID,
            "at most 4096 pixels a side",
        ),
        Bad(
            "pixel budget",
            CLASSIFY,
            # Two real 4096x4096 images fill the budget; the third is refused before it is decoded.
            classify(*[classifier_pb2.Image(encoded=BIG_PNG)] * 2, classifier_pb2.Image(encoded=png(1, 1, body=b""))),
            INVALID,
            "decoded pixels in total",
        ),
        Bad("raw short", CLASSIFY, classify(_raw(bytes(783))), INVALID, "needs 784 bytes, got 783"),
        Bad(
            "raw wrong size", CLASSIFY, classify(_raw(bytes(16), height=4, width=4)), INVALID, "this model takes 28x28"
        ),
        Bad(
            "raw huge size",
            CLASSIFY,
            classify(_raw(b"", height=2**32 - 1, width=2**32 - 1)),
            INVALID,
            "this model takes 28x28",
        ),
        Bad("raw dtype unset", CLASSIFY, classify(_raw(bytes(784), dtype=0)), INVALID, "dtype must be"),
        Bad("raw dtype unknown", CLASSIFY, classify(_raw(bytes(784), dtype=77)), INVALID, "dtype must be"),
        Bad("NaN pixel", CLASSIFY, classify(_raw(_floats(float("nan")), f32)), INVALID, "NaN or infinite"),
        Bad("inf pixel", CLASSIFY, classify(_raw(_floats(float("inf")), f32)), INVALID, "NaN or infinite"),
        Bad("-inf pixel", CLASSIFY, classify(_raw(_floats(float("-inf")), f32)), INVALID, "NaN or infinite"),
        Bad("negative pixel", CLASSIFY, classify(_raw(_floats(-0.5), f32)), INVALID, "must lie in [0, 1]"),
        Bad("pixel above 1", CLASSIFY, classify(_raw(_floats(1e30), f32)), INVALID, "must lie in [0, 1]"),
        Bad("top_k negative", CLASSIFY, classify(ZEROS, top_k=-1), INVALID, "top_k must be between 1 and 10"),
        Bad("top_k 11", CLASSIFY, classify(ZEROS, top_k=11), INVALID, "top_k must be between 1 and 10"),
        Bad("top_k 2**31-1", CLASSIFY, classify(ZEROS, top_k=2**31 - 1), INVALID, "top_k must be between 1 and 10"),
        Bad("257 images", CLASSIFY, classify(*[ZEROS] * 257), INVALID, "the limit is 256"),
        Bad("unknown model", CLASSIFY, classify(ZEROS, model="mnist-gpt"), NOT_FOUND, "this classifier service serves"),
        Bad("no model", CLASSIFY, classify(ZEROS, model=""), INVALID, "model.name is required"),
        Bad(
            "negative version",
            CLASSIFY,
            classifier_pb2.ClassifyRequest(model=common_pb2.ModelRef(name="mnist-cnn", version=-2), images=[ZEROS]),
            INVALID,
            "model.version must be 0",
        ),
        Bad(
            "over the size limit",
            CLASSIFY,
            classify(classifier_pb2.Image(encoded=bytes(MESSAGE_LIMIT + 1))),
            TOO_BIG,
            "larger than max",
        ),
        Bad("undecodable", CLASSIFY, UNDECODABLE, INVALID, "not a valid message"),
        Bad("bad UTF-8 in the name", CLASSIFY, b"\x0a\x03\x0a\x01\xff", INVALID, "not a valid message"),
    ]
    bad += [
        Bad(f"{case_id}", CLASSIFY, classify(ZEROS, model=name), INVALID, "not a valid model name")
        for case_id, name in invalid_names("mnist-cnn")
    ]
    return tuple(bad)


def classify_requests() -> st.SearchStrategy[Message]:
    """Classify requests with images of every kind: raw of any size and dtype, PNGs, random bytes."""
    raw = st.builds(
        lambda h, w, dtype, data: _raw(data, dtype, h, w),
        st.one_of(st.just(28), st.integers(0, 2**32 - 1)),
        st.one_of(st.just(28), st.integers(0, 2**32 - 1)),
        st.sampled_from([0, common_pb2.DATA_TYPE_UINT8, common_pb2.DATA_TYPE_FLOAT32, 99]),
        st.one_of(
            st.binary(min_size=784, max_size=784), st.binary(min_size=3136, max_size=3136), st.binary(max_size=64)
        ),
    )
    encoded = st.one_of(
        st.binary(max_size=512).map(lambda data: classifier_pb2.Image(encoded=data)),
        st.builds(lambda w, h: classifier_pb2.Image(encoded=png(w, h)), st.integers(1, 64), st.integers(1, 64)),
        st.builds(
            lambda w, h: classifier_pb2.Image(encoded=png(w, h, body=b"")),
            st.integers(0, 2**31 - 1),
            st.integers(0, 2**31 - 1),
        ),
    )
    images = st.lists(st.one_of(raw, encoded, st.just(classifier_pb2.Image())), max_size=4)
    return st.builds(
        lambda name, version, imgs, k: classifier_pb2.ClassifyRequest(
            model=common_pb2.ModelRef(name=name, version=version), images=imgs, top_k=k
        ),
        model_names("mnist-cnn"),
        st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1)),
        images,
        st.one_of(st.integers(0, 10), st.integers(-(2**31), 2**31 - 1)),
    )


CLASSIFIER_GRAPHS = tuple(
    Graph(model, (GraphInput("image", "FP32", ("batch", 28, 28)),)) for model in ("mnist-cnn", "mnist-mlp")
)
CASE = ServiceCase(
    family="classifier",
    repository_fixture="classifier_repository",
    model="mnist-cnn",
    services=("myelin_api.v1.Classifier",),
    infer=kserve_infer("mnist-cnn", "image", np.zeros((1, 28, 28), "<f4"), "FP32"),
    good=(
        (CLASSIFY, classify(ZEROS, top_k=3)),
        (CLASSIFY, classify(classifier_pb2.Image(encoded=png(28, 28)), ZEROS, model="mnist-mlp")),
    ),
    bad=(
        *classifier_bad(),
        *kserve_bad(
            CLASSIFIER_GRAPHS[0],
            {"batch": 1},
            [("257 rows", {"batch": 257}, "the limit is 256"), ("no rows", {"batch": 0}, "is empty")],
        ),
    ),
    fuzz=((CLASSIFY, classify_requests()),),
    graphs=CLASSIFIER_GRAPHS,
)


def _digit_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def workload() -> list[Request]:
    """The soak's well-formed requests: the family's own API, KServe, Models, health."""
    pixels = bytes(range(256)) * 3 + bytes(16)  # 784
    raw = classifier_pb2.Image(
        raw=classifier_pb2.RawImage(height=28, width=28, dtype=common_pb2.DATA_TYPE_UINT8, data=pixels)
    )
    pngs = [classifier_pb2.Image(encoded=_digit_png(seed)) for seed in range(4)]
    floats = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
    infer = pb.ModelInferRequest(
        model_name="mnist-mlp",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[2, 28, 28])],
        raw_input_contents=[floats.astype("<f4").tobytes()],
    )
    cnn, mlp = common_pb2.ModelRef(name="mnist-cnn"), common_pb2.ModelRef(name="mnist-mlp")
    return rpcs.soak_requests(
        "mnist-cnn",
        ("/myelin_api.v1.Classifier/Classify", classifier_pb2.ClassifyRequest(model=cnn, images=[raw], top_k=3)),
        ("/myelin_api.v1.Classifier/Classify", classifier_pb2.ClassifyRequest(model=mlp, images=pngs)),
        ("/inference.GRPCInferenceService/ModelInfer", infer),
    )


def smoke(client: Client, data_dir: Path) -> str:
    test = mnist.load_split(data_dir, "test")
    images, labels = test.images[:64], test.labels[:64]
    text = []
    for model in ("mnist-mlp", "mnist-cnn"):
        result = client.classify(images, model=model)
        accuracy = float(np.mean([c.label == str(label) for c, label in zip(result, labels, strict=True)]))
        if accuracy < 0.8:
            raise SystemExit(f"{model}: {accuracy:.0%} of 64 test digits right; a quick model gets over 90%")
        text.append(f"{model} v{result.version} {accuracy:.0%} of 64 test digits")
    return ", ".join(text)
