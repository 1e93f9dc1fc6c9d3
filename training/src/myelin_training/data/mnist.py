"""MNIST from its four IDX files (gzip-compressed or not) into uint8 arrays.

IDX: a big-endian header (magic: two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data in row-major order.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from myelin_training.data.files import find_file, fingerprint

IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LABELS = [str(d) for d in range(10)]


class IdxFormatError(ValueError):
    """The file is not a well-formed IDX file."""


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file; `.gz` files are decompressed on the fly."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxFormatError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX element type 0x{code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxFormatError(f"{path}: header promises {expected} data bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def mnist_path(data_dir: Path, stem: str) -> Path:
    """`stem` under data_dir/mnist or data_dir itself, gzip-compressed or not."""
    candidates = [f"{sub}{stem}{ext}" for sub in ("mnist/", "") for ext in (".gz", "")]
    return find_file(f"MNIST file {stem}", data_dir, candidates)


@dataclass(frozen=True)
class MnistSplit:
    images: np.ndarray  # (N, 28, 28) uint8, 0 = background
    labels: np.ndarray  # (N,) int64


def load_split(data_dir: Path, split: str) -> MnistSplit:
    images_stem, labels_stem = SPLIT_FILES[split]
    images = read_idx(mnist_path(data_dir, images_stem))
    labels = read_idx(mnist_path(data_dir, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxFormatError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not pair up")
    return MnistSplit(images=images, labels=labels.astype(np.int64))


def dataset_fingerprint(data_dir: Path) -> dict[str, object]:
    """Checksums of the four files, for the manifest."""
    stems = [s for pair in SPLIT_FILES.values() for s in pair]
    return {"name": "mnist", **fingerprint(mnist_path(data_dir, s) for s in stems)}


def train_validation_split(split: MnistSplit, validation_size: int, seed: int) -> tuple[MnistSplit, MnistSplit]:
    """A fixed, seeded hold-out of the training images."""
    order = np.random.default_rng(seed).permutation(len(split.labels))
    val, train = order[:validation_size], order[validation_size:]
    return (
        MnistSplit(split.images[train], split.labels[train]),
        MnistSplit(split.images[val], split.labels[val]),
    )
