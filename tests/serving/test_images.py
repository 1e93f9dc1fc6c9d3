"""Image decoding and raw-pixel checks: what reaches the graph, and what is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from myelin_serving.classifier.images import MAX_SIDE, PixelBudget, RawPixels, decode_encoded, from_raw
from myelin_serving.errors import InvalidArgument


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


DIGIT = np.zeros((28, 28), dtype=np.uint8)
DIGIT[6:22, 12:16] = 255  # a "1"


def test_png_of_a_digit_is_exactly_the_training_input() -> None:
    np.testing.assert_array_equal(decode_encoded(encode(DIGIT), 28, 28, 0), DIGIT.astype(np.float32) / 255)


def test_colour_and_jpeg_are_converted_to_grey() -> None:
    rgb = encode(DIGIT, mode="RGB")
    np.testing.assert_array_equal(decode_encoded(rgb, 28, 28, 0), DIGIT / np.float32(255))
    jpeg = decode_encoded(encode(DIGIT, "JPEG"), 28, 28, 0)
    assert jpeg.shape == (28, 28) and abs(float(jpeg.mean()) - float(DIGIT.mean() / 255)) < 0.02


def test_other_sizes_are_resized() -> None:
    big = np.kron(DIGIT, np.ones((4, 4), dtype=np.uint8))  # 112 x 112
    pixels = decode_encoded(encode(big), 28, 28, 0)
    assert pixels.shape == (28, 28)
    assert pixels[14, 13] > 0.9 and pixels[2, 2] == 0.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a PNG or JPEG"),
        (encode(DIGIT)[:60], "could not be decoded"),
        (encode(DIGIT, "GIF"), "not a PNG or JPEG"),
    ],
)
def test_bad_encoded_images_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_encoded(data, 28, 28, 3)


def test_huge_images_are_refused_before_decoding() -> None:
    with pytest.raises(InvalidArgument, match="at most"):
        decode_encoded(encode(np.zeros((8, MAX_SIDE + 1), dtype=np.uint8)), 28, 28, 0)


def test_raw_uint8_and_float32() -> None:
    np.testing.assert_array_equal(
        from_raw(RawPixels(28, 28, "uint8", DIGIT.tobytes()), 28, 28, 0), DIGIT / np.float32(255)
    )
    floats = (DIGIT / 255).astype("<f4")
    np.testing.assert_array_equal(from_raw(RawPixels(28, 28, "float32", floats.tobytes()), 28, 28, 0), floats)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (RawPixels(20, 20, "uint8", bytes(400)), "takes 28x28"),
        (RawPixels(28, 28, "uint8", bytes(100)), "needs 784 bytes"),
        (RawPixels(28, 28, "float32", bytes(784)), "needs 3136 bytes"),
        (RawPixels(28, 28, "", bytes(784)), "dtype must be"),
        (RawPixels(28, 28, "float32", np.full((28, 28), np.nan, "<f4").tobytes()), "NaN or infinite"),
        (RawPixels(28, 28, "float32", np.full((28, 28), 255, "<f4").tobytes()), r"in \[0, 1\]"),
    ],
)
def test_bad_raw_tensors_are_refused(raw: RawPixels, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        from_raw(raw, 28, 28, 0)


def test_a_request_cannot_ask_for_unbounded_decoding() -> None:
    big = encode(np.zeros((4096, 4096), dtype=np.uint8))  # a few KB that decode to 16 M pixels
    assert len(big) < 100_000
    budget = PixelBudget(limit=3 * 4096 * 4096)
    for index in range(3):
        decode_encoded(big, 28, 28, index, budget)
    with pytest.raises(InvalidArgument, match=r"images\[3\] takes the request over"):
        decode_encoded(big, 28, 28, 3, budget)
