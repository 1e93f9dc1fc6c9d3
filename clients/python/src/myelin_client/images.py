"""Turning what users hold (numpy arrays, PIL images, bytes, file paths) into `Image` messages.

Numpy arrays travel as raw pixels: (H, W) or (N, H, W), uint8 0..255 or float in [0, 1], 0 the
background. Bytes and files travel encoded (PNG or JPEG); the server decodes and resizes them. PIL
images are encoded as PNG, which needs Pillow only because the caller already has it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from myelin_api.v1 import classifier_pb2, common_pb2


def to_images(images: Any) -> list[classifier_pb2.Image]:
    """One image or an iterable of them -> messages, in order."""
    if isinstance(images, np.ndarray):
        return _from_array(images)
    if _is_single(images):
        return [_one(images)]
    if isinstance(images, Iterable):
        out: list[classifier_pb2.Image] = []
        for item in images:
            out.extend(_from_array(item) if isinstance(item, np.ndarray) else [_one(item)])
        return out
    raise TypeError(f"cannot classify a {type(images).__name__}: pass arrays, PIL images, bytes or paths")


def _is_single(item: Any) -> bool:
    return isinstance(item, bytes | bytearray | memoryview | str | os.PathLike) or _is_pil(item)


def _is_pil(item: Any) -> bool:
    return type(item).__module__.startswith("PIL.") and hasattr(item, "save")


def _one(item: Any) -> classifier_pb2.Image:
    if isinstance(item, bytes | bytearray | memoryview):
        return classifier_pb2.Image(encoded=bytes(item))
    if isinstance(item, str | os.PathLike):
        return classifier_pb2.Image(encoded=Path(item).read_bytes())
    if _is_pil(item):
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return classifier_pb2.Image(encoded=buffer.getvalue())
    raise TypeError(f"cannot classify a {type(item).__name__}: pass arrays, PIL images, bytes or paths")


def _from_array(array: np.ndarray) -> list[classifier_pb2.Image]:
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"arrays must be (H, W) or (N, H, W), not {array.shape}")
    if array.dtype == np.uint8:
        dtype, data = common_pb2.DATA_TYPE_UINT8, array
    elif np.issubdtype(array.dtype, np.floating):
        dtype, data = common_pb2.DATA_TYPE_FLOAT32, array.astype("<f4")
    else:
        raise TypeError(f"arrays must be uint8 (0..255) or float (0..1), not {array.dtype}")
    _, height, width = data.shape
    return [
        classifier_pb2.Image(
            raw=classifier_pb2.RawImage(
                height=height, width=width, dtype=dtype, data=np.ascontiguousarray(image).tobytes()
            )
        )
        for image in data
    ]
