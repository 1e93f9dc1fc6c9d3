"""`make wheelhouse`: what a GPU host without a package index needs, in parts that travel one by one.

    .venv/bin/python deploy/gpu/wheelhouse.py [--out .wheelhouse] [--data-dir DIR] [--part-mb 50]

On a machine with an index, downloads the wheels of deploy/gpu/requirements.txt for CPython 3.12
on manylinux x86-64 (versions pinned by requirements/constraints.txt and requirements/gpu.txt,
no dependencies resolved: the list is the closure), builds wheels of the four Myelin distributions,
packs the datasets folder as one tar, and writes:

    OUT/files/            the whole files
    OUT/SHA256SUMS        a checksum for every whole file and every part
    OUT/carry/01 .. NN/   what each device call carries: files split into numbered parts
                          (NAME.part-000, ...) where larger than --part-mb, small files packed
                          alongside, every folder at most --part-mb, each with a copy of SHA256SUMS

deploy/gpu/install.py joins the parts on the host, checks every checksum and installs with
`pip install --no-index --no-deps --target` (deploy/gpu/README.md has the steps).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).parent))
from install import DATA_TAR, sha256  # the host's installer: standard library only

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = ["protos/python", "clients/python", "services", "training"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def pins() -> dict[str, str]:
    """Canonical name -> version, from the constraints and the GPU swap-in."""
    found: dict[str, str] = {}
    for name in ("constraints.txt", "gpu.txt"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                package, version = line.split("==", 1)
                found[canonicalize_name(package)] = version.strip()
    return found


def wanted() -> list[str]:
    lines = (ROOT / "deploy" / "gpu" / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def download(files: Path, python_version: str) -> None:
    versions = pins()
    missing = [n for n in wanted() if canonicalize_name(n) not in versions]
    if missing:
        raise SystemExit(f"not pinned in requirements/constraints.txt or gpu.txt: {', '.join(missing)}")
    specs = [f"{name}=={versions[canonicalize_name(name)]}" for name in wanted()]
    abi = "cp" + python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(files)]
    command += ["--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "none"]
    command += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([*command, *specs], check=True)
    # our own distributions, pure Python, built from copies of this checkout's folders: setuptools
    # leaves build/ behind, and a stale build/ would put modules deleted since into the wheel
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(files)]
    with tempfile.TemporaryDirectory() as tmp:
        skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        copies = [shutil.copytree(ROOT / d, Path(tmp) / d, ignore=skip) for d in DISTRIBUTIONS]
        subprocess.run([*build, *map(str, copies)], check=True)


def pack_data(data_dir: Path, files: Path) -> None:
    with tarfile.open(files / DATA_TAR, "w") as tar:  # its files are gzip already, or small
        tar.add(data_dir, arcname="data")


def split(path: Path, into: Path, size: int) -> list[Path]:
    """`path` as NAME.part-000, NAME.part-001, ... of at most `size` bytes each, in `into`."""
    parts = []
    with path.open("rb") as f:
        for i, block in enumerate(iter(lambda: f.read(size), b"")):
            part = into / f"{path.name}.part-{i:03d}"
            part.write_bytes(block)
            parts.append(part)
    return parts


def bundle(out: Path, size: int) -> list[list[Path]]:
    """Split the big files, then pack every piece into carry folders of at most `size` bytes."""
    files, parts_dir = out / "files", out / "parts"
    parts_dir.mkdir()
    pieces: list[Path] = []
    sums: list[str] = []
    for path in sorted(files.iterdir()):
        sums.append(f"{sha256(path)}  {path.name}")
        if path.stat().st_size > size:
            for part in split(path, parts_dir, size):
                sums.append(f"{sha256(part)}  {part.name}")
                pieces.append(part)
        else:
            pieces.append(path)
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    groups: list[list[Path]] = []
    for piece in sorted(pieces, key=lambda p: -p.stat().st_size):  # first fit, largest first
        for group in groups:
            if sum(p.stat().st_size for p in group) + piece.stat().st_size <= size:
                group.append(piece)
                break
        else:
            groups.append([piece])
    for i, group in enumerate(groups, 1):
        folder = out / "carry" / f"{i:02d}"
        folder.mkdir(parents=True)
        for piece in group:
            os.link(piece, folder / piece.name)
        shutil.copy(out / "SHA256SUMS", folder / "SHA256SUMS")
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".wheelhouse")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MYELIN_DATA_DIR"), help="packed when given")
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--part-mb", type=float, default=50, help="largest part and carry folder, in MB (10^6 bytes)")
    parser.add_argument("--files", type=Path, help="reuse the wheels already in this folder instead of downloading")
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    files = args.out / "files"
    if args.files:
        shutil.copytree(args.files, files)
    else:
        files.mkdir(parents=True)
        download(files, args.python_version)
    if args.data_dir:
        pack_data(Path(args.data_dir), files)
    groups = bundle(args.out, int(args.part_mb * 1_000_000))
    print(f"\n{args.out}: {len(groups)} carry folders")
    for i, group in enumerate(groups, 1):
        total = sum(p.stat().st_size for p in group) / 1e6
        print(f"  carry/{i:02d}: {total:5.1f} MB  {', '.join(p.name for p in group)}")


if __name__ == "__main__":
    main()
