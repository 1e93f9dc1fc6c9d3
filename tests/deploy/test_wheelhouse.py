"""The offline GPU install's packing (deploy/gpu/wheelhouse.py) and joining (deploy/gpu/install.py),
on small files: split into parts, packed into carry folders under the size limit, joined back
byte for byte, and every missing or damaged piece refused by name. (Downloading and installing the
real wheels is rehearsed by hand: deploy/gpu/README.md.)"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from harness.servers import REPO_ROOT

pytestmark = pytest.mark.deploy


def _module(name: str) -> ModuleType:
    path = REPO_ROOT / "deploy" / "gpu" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wheelhouse, install = _module("wheelhouse"), _module("install")


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Three files, one larger than the 1,000-byte limit, packed; then every carry folder's files
    copied into one folder, as the device calls leave them."""
    rng = np.random.default_rng(0)
    originals = {"big-1.0-py3-none-any.whl": 2500, "small-1.0-py3-none-any.whl": 400, "myelin-data.tar": 700}
    contents = {name: rng.bytes(size) for name, size in originals.items()}
    out = tmp_path / "wheelhouse"
    (out / "files").mkdir(parents=True)
    for name, data in contents.items():
        (out / "files" / name).write_bytes(data)
    groups = wheelhouse.bundle(out, 1000)
    for group in groups:
        assert sum(p.stat().st_size for p in group) <= 1000
    folders = sorted((out / "carry").iterdir())
    assert len(folders) == len(groups) >= 4  # 3 parts of the big file, 2 small files
    assert all((f / "SHA256SUMS").is_file() for f in folders)
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    for folder in folders:
        for piece in folder.iterdir():
            shutil.copy(piece, gathered / piece.name)
    return gathered, contents


def test_the_parts_join_back_into_the_same_files(packed: tuple[Path, dict[str, bytes]]) -> None:
    gathered, contents = packed
    assert sorted(p.name for p in gathered.glob("big-*.part-*")) == [
        f"big-1.0-py3-none-any.whl.part-{i:03d}" for i in range(3)
    ]
    files = install.assemble(gathered)
    assert sorted(f.name for f in files) == sorted(contents)
    for name, data in contents.items():
        assert (gathered / name).read_bytes() == data


def test_a_missing_or_damaged_piece_is_refused_by_name(packed: tuple[Path, dict[str, bytes]]) -> None:
    gathered, _ = packed
    (gathered / "big-1.0-py3-none-any.whl.part-001").unlink()
    small = gathered / "small-1.0-py3-none-any.whl"
    small.write_bytes(small.read_bytes()[:-1] + b"x")
    (gathered / "myelin-data.tar").unlink()
    with pytest.raises(SystemExit) as refused:
        install.assemble(gathered)
    message = str(refused.value)
    assert "big-1.0-py3-none-any.whl: parts missing: big-1.0-py3-none-any.whl.part-001" in message
    assert "small-1.0-py3-none-any.whl: checksum differs" in message
    assert "myelin-data.tar: missing" in message
    assert not (gathered / "big-1.0-py3-none-any.whl").exists()


def test_every_wanted_package_is_pinned() -> None:
    pins = wheelhouse.pins()
    assert pins["onnxruntime-gpu"] == "1.31.1"
    missing = [name for name in wheelhouse.wanted() if wheelhouse.canonicalize_name(name) not in pins]
    assert missing == []
