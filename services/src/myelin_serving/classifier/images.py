"""Turning what callers send into the pixels the graph takes: (H, W) float32 in [0, 1], 0 = background.

Training scaled MNIST's uint8 pixels by 1/255; normalisation lives inside the graph. So a PNG of an
MNIST digit reaches the network exactly as in training. Encoded images (PNG, JPEG) of another size
are converted to grey and resized (bilinear); raw tensors must already have the model's size.
Colours are not inverted: digits are light on a dark background, as in MNIST.

On the request path pixels are checked but not converted: `PixelRows` keeps each image as it came
(uint8 or float32, a view over the request's bytes where it can) and writes it into the batch the
batcher assembles, scaling uint8 by 1/255 on the way: one operation per image, no copies before it.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from myelin_serving.errors import InvalidArgument

MAX_SIDE = 4096  # encoded images larger than this are refused before decoding
MAX_REQUEST_PIXELS = 32 * 1024 * 1024  # decoded pixels one request may ask for, all images together
FORMATS = ("PNG", "JPEG")
SCALE = np.float32(255)  # uint8 pixels / 255 in float32: what training did to MNIST's pixels


def to_unit(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 or float32 pixels as float32 in [0, 1], written into `out` when given."""
    if pixels.dtype == np.uint8:
        return np.divide(pixels, SCALE, out=out)  # float32 arithmetic, the same bits as astype then / 255
    if out is None:
        return pixels
    out[...] = pixels
    return out


class PixelRows:
    """A (B, H, W) float32 batcher input whose rows are written straight into the batch (batching.RowSource)."""

    dtype = np.dtype(np.float32)

    def __init__(self, images: list[np.ndarray], height: int, width: int) -> None:
        self.images = images  # each (H, W): uint8 (scaled when written) or float32 in [0, 1]
        self.shape = (len(images), height, width)

    def write(self, out: np.ndarray) -> None:
        for i, image in enumerate(self.images):
            to_unit(image, out=out[i])


class PixelBudget:
    """Caps the pixels one request may make the server decode (small files can declare huge images)."""

    def __init__(self, limit: int = MAX_REQUEST_PIXELS) -> None:
        self.left = limit
        self.limit = limit

    def spend(self, width: int, height: int, index: int) -> None:
        self.left -= width * height
        if self.left < 0:
            raise InvalidArgument(
                f"images[{index}] takes the request over {self.limit} decoded pixels in total: "
                "send fewer or smaller images"
            )


class RawPixels(NamedTuple):  # a tuple: built for every image of every request
    height: int
    width: int
    dtype: str  # "uint8" | "float32" | "" (unset)
    data: bytes


def decode_encoded(data: bytes, height: int, width: int, index: int, budget: PixelBudget | None = None) -> np.ndarray:
    """(H, W) float32 in [0, 1]."""
    return to_unit(decode_grey(data, height, width, index, budget))


def decode_grey(data: bytes, height: int, width: int, index: int, budget: PixelBudget | None = None) -> np.ndarray:
    """(H, W) uint8 grey levels of a PNG or JPEG, resized to the model's size."""
    if not data:
        raise InvalidArgument(f"images[{index}].encoded is empty: send PNG or JPEG bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                if image.width > MAX_SIDE or image.height > MAX_SIDE:
                    size = f"{image.width}x{image.height}"
                    raise InvalidArgument(f"images[{index}] is {size}; images may be at most {MAX_SIDE} pixels a side")
                if budget is not None:
                    budget.spend(image.width, image.height, index)
                grey = image.convert("L")
        if grey.size != (width, height):
            grey = grey.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.uint8)
    except InvalidArgument:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidArgument(f"images[{index}].encoded is not a PNG or JPEG image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"images[{index}] has too many pixels to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data inside a valid header
        raise InvalidArgument(f"images[{index}] could not be decoded (corrupt or truncated?): {exc}") from exc


def from_raw(raw: RawPixels, height: int, width: int, index: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]."""
    return to_unit(raw_pixels(raw, height, width, index))


def raw_pixels(raw: RawPixels, height: int, width: int, index: int) -> np.ndarray:
    """(H, W) uint8 or float32 in [0, 1], checked, read-only over the request's bytes."""
    if (raw.height, raw.width) != (height, width):
        raise InvalidArgument(
            f"images[{index}].raw is {raw.height}x{raw.width}; this model takes {height}x{width} raw tensors "
            "(send an encoded PNG or JPEG to have it resized)"
        )
    count = height * width
    if raw.dtype == "uint8":
        if len(raw.data) != count:
            raise InvalidArgument(
                f"images[{index}].raw: {height}x{width} uint8 needs {count} bytes, got {len(raw.data)}"
            )
        return np.frombuffer(raw.data, dtype=np.uint8).reshape(height, width)
    if raw.dtype == "float32":
        if len(raw.data) != 4 * count:
            raise InvalidArgument(
                f"images[{index}].raw: {height}x{width} float32 needs {4 * count} bytes, got {len(raw.data)}"
            )
        pixels = np.frombuffer(raw.data, dtype="<f4").reshape(height, width).astype(np.float32, copy=False)
        # One test for the common case: NaN fails both comparisons, infinities fail one.
        if not (pixels.min() >= 0.0 and pixels.max() <= 1.0):
            if not np.isfinite(pixels).all():
                raise InvalidArgument(f"images[{index}].raw has NaN or infinite pixels")
            raise InvalidArgument(f"images[{index}].raw float32 pixels must lie in [0, 1]")
        return pixels
    raise InvalidArgument(f"images[{index}].raw.dtype must be DATA_TYPE_UINT8 or DATA_TYPE_FLOAT32")
