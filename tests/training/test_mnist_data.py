"""The IDX reader, on files written here and on the real MNIST files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from myelin_training.data import mnist
from myelin_training.data.files import DatasetNotFoundError


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrips(tmp_path: Path, compress: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "imgs-idx3-ubyte", images, compress=compress)
    np.testing.assert_array_equal(mnist.read_idx(path), images)


def test_read_idx_refuses_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(mnist.IdxFormatError, match="bad magic"):
        mnist.read_idx(bad)
    truncated = write_idx(tmp_path / "t", np.zeros((4, 3), dtype=np.uint8), compress=False)
    truncated.write_bytes(truncated.read_bytes()[:-2])
    with pytest.raises(mnist.IdxFormatError, match="data bytes"):
        mnist.read_idx(truncated)


def test_missing_dataset_names_every_path_tried(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_split(tmp_path, "test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") in message
    assert "MYELIN_DATA_DIR" in message


def test_uncompressed_files_in_the_data_dir_root_are_found(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), dtype=np.uint8), compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 4], dtype=np.uint8), compress=False)
    split = mnist.load_split(tmp_path, "test")
    assert split.images.shape == (2, 28, 28)
    assert split.labels.tolist() == [3, 4]


def test_real_mnist(data_dir: Path) -> None:
    train, test = mnist.load_split(data_dir, "train"), mnist.load_split(data_dir, "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.images.dtype == np.uint8 and set(np.unique(test.labels)) == set(range(10))
    fit, val = mnist.train_validation_split(train, 5000, seed=0)
    assert len(fit.labels) == 55000 and len(val.labels) == 5000
    again, _ = mnist.train_validation_split(train, 5000, seed=0)
    np.testing.assert_array_equal(fit.labels, again.labels)
    fingerprint = mnist.dataset_fingerprint(data_dir)
    assert len(fingerprint["files"]) == 4 and len(str(fingerprint["sha256"])) == 64
