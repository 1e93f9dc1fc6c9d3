"""One copy on the classify path: pixels go into the batch as they came, uint8 scaled on the way, and
the graph sees exactly the float32 values the old convert-then-copy path gave it."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from harness.servers import ServerThread
from myelin_client import AsyncClient
from myelin_serving.batching import DynamicBatcher, assemble
from myelin_serving.classifier.images import PixelRows, RawPixels, decode_grey, raw_pixels, to_unit
from myelin_serving.settings import BatchingSettings

RNG = np.random.default_rng(17)


def old_path(pixels: np.ndarray) -> np.ndarray:
    """What the service computed before, per image: uint8 -> float32, then / 255."""
    return pixels.astype(np.float32) / 255.0


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_every_uint8_level_scales_to_the_same_bits_as_before() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(bits(to_unit(levels)), bits(old_path(levels)))
    row = np.full((16, 16), np.nan, dtype=np.float32)
    assert to_unit(levels, out=row) is row
    np.testing.assert_array_equal(bits(row), bits(old_path(levels)))


def test_rows_of_every_form_are_written_once_into_a_shared_batch() -> None:
    digit = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    floats = RNG.random((28, 28), dtype=np.float32)
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="PNG")
    first = PixelRows(
        [
            raw_pixels(RawPixels(28, 28, "uint8", digit.tobytes()), 28, 28, 0),
            raw_pixels(RawPixels(28, 28, "float32", floats.tobytes()), 28, 28, 1),
        ],
        28,
        28,
    )
    second = PixelRows([decode_grey(buffer.getvalue(), 28, 28, 0)], 28, 28)
    plain = RNG.random((2, 28, 28), dtype=np.float32)  # another request's ready array (KServe's form)
    batch = assemble([first, plain, second])
    expected = np.concatenate([np.stack([old_path(digit), floats]), plain, old_path(digit)[None]])
    assert batch.shape == (5, 28, 28) and batch.dtype == np.float32
    np.testing.assert_array_equal(bits(batch), bits(expected))
    # A request alone still gets its own batch buffer, never a view over its bytes.
    alone = assemble([first])
    np.testing.assert_array_equal(bits(alone), bits(expected[:2]))
    assert alone.flags.writeable and alone.flags.owndata
    # A ready array alone goes through untouched, as before.
    assert assemble([plain]) is plain


def test_the_batcher_runs_row_sources_beside_arrays_and_splits_the_answers() -> None:
    seen: list[np.ndarray] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(feeds["image"])
        return {"sum": feeds["image"].sum(axis=(1, 2), dtype=np.float64)}

    images = [RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (1, 3, 2)]

    async def scenario() -> list[dict[str, np.ndarray]]:
        settings = BatchingSettings.model_validate({"max_batch_size": 64, "max_queue_delay_us": 20_000})
        batcher = DynamicBatcher(run, settings, model="m", version=1)
        feeds = [{"image": PixelRows(list(group), 28, 28)} for group in images[:2]]
        feeds.append({"image": old_path(images[2])})
        outputs = await asyncio.gather(*(batcher.infer(f) for f in feeds))
        await batcher.close()
        return outputs

    outputs = asyncio.run(scenario())
    assert [len(b) for b in seen] == [6]  # one execution for the three requests
    np.testing.assert_array_equal(bits(seen[0]), bits(old_path(np.concatenate(images))))
    for group, out in zip(images, outputs, strict=True):
        np.testing.assert_array_equal(out["sum"], old_path(group).sum(axis=(1, 2), dtype=np.float64))


def test_concurrent_uint8_requests_answer_as_the_graph_does_on_the_old_pixels(classifier_server: ServerThread) -> None:
    import onnxruntime as ort

    from myelin_training.data.mnist import LABELS

    path = classifier_server.settings.repository / "mnist-mlp" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    requests = [RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (1, 2, 3, 1, 4, 1)]

    async def scenario() -> list[list[float]]:
        async with AsyncClient(classifier_server.target) as client:
            answers = await asyncio.gather(*(client.classify(r, model="mnist-mlp", top_k=10) for r in requests))
        return [
            [next(p.probability for p in c.labels if p.index == i) for i in range(len(LABELS))]
            for answer in answers
            for c in answer
        ]

    got = np.array(asyncio.run(scenario()))
    expected = np.concatenate([session.run(None, {"image": old_path(r)})[0] for r in requests])
    # The same pixels; the probabilities may differ in the last bits with the batch's size.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_raw_pixels_are_views_over_the_request_bytes(dtype: str) -> None:
    data = (RNG.random((28, 28), dtype=np.float32) if dtype == "float32" else RNG.integers(0, 256, (28, 28))).astype(
        dtype
    )
    pixels = raw_pixels(RawPixels(28, 28, dtype, data.tobytes()), 28, 28, 0)
    assert pixels.dtype == np.dtype(dtype) and not pixels.flags.owndata and not pixels.flags.writeable
    np.testing.assert_array_equal(pixels, data)
