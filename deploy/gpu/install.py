"""Install a wheelhouse (deploy/gpu/wheelhouse.py) on a host without a package index. Standard library only.

    python3 deploy/gpu/install.py --wheelhouse DIR --target DIR [--data-dir DIR]

1. joins NAME.part-000, NAME.part-001, ... back into NAME, checking every part and every whole
   file against DIR/SHA256SUMS (a missing or damaged piece stops here, named);
2. installs every wheel with `pip install --no-index --no-deps --target TARGET`: nothing of the
   host's own packages changes, and nothing is fetched;
3. unpacks the datasets tar, when there is one, into --data-dir;
4. writes TARGET/env.sh, to be sourced before running anything: PYTHONPATH puts TARGET first, so
   its onnxruntime-gpu is the `onnxruntime` Python imports, ahead of the host's CPU onnxruntime;
   LD_LIBRARY_PATH names the host's NVIDIA wheels' lib folders (CUDA 13, cuDNN), where
   onnxruntime-gpu looks for them; MYELIN_DATA_DIR names the datasets;
5. imports onnxruntime the way env.sh sets things up and fails unless it comes from TARGET.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

PART = re.compile(r"^(?P<name>.+)\.part-(?P<index>\d{3})$")
DATA_TAR = "myelin-data.tar"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(wheelhouse: Path) -> list[Path]:
    """The whole files, joined from their parts where split, every checksum verified."""
    sums = {}
    for line in (wheelhouse / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.strip()] = digest
    parts: dict[str, list[str]] = {}
    for name in sums:
        match = PART.match(name)
        if match:
            parts.setdefault(match["name"], []).append(name)
    problems = []
    for name, digest in sums.items():
        path = wheelhouse / name
        if name in parts or not path.is_file():
            continue  # whole files that travelled in parts are checked once joined
        if sha256(path) != digest:
            problems.append(f"{name}: checksum differs")
    for name, pieces in sorted(parts.items()):
        missing = [p for p in sorted(pieces) if not (wheelhouse / p).is_file()]
        if missing:
            problems.append(f"{name}: parts missing: {', '.join(missing)}")
            continue
        damaged = [p for p in sorted(pieces) if sha256(wheelhouse / p) != sums[p]]
        if damaged:
            problems.append(f"{name}: parts damaged: {', '.join(damaged)}")
            continue
        with (wheelhouse / name).open("wb") as out:
            for piece in sorted(pieces):
                out.write((wheelhouse / piece).read_bytes())
        if sha256(wheelhouse / name) != sums[name]:
            problems.append(f"{name}: joined file's checksum differs")
    absent = [n for n in sums if not PART.match(n) and n not in parts and not (wheelhouse / n).is_file()]
    problems += [f"{name}: missing" for name in absent]
    if problems:
        raise SystemExit("the wheelhouse is incomplete or damaged:\n  " + "\n  ".join(problems))
    return [wheelhouse / n for n in sums if not PART.match(n)]


def library_path() -> str:
    """lib folders of the host's NVIDIA wheels (nvidia/cu13/lib, nvidia/cudnn/lib, ...), if any."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.pathsep.join(str(p) for root in roots for p in sorted(Path(root).glob("*/lib")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheelhouse", type=Path, required=True, help="the carried folders' files, together")
    parser.add_argument("--target", type=Path, required=True, help="where the packages go (created)")
    parser.add_argument("--data-dir", type=Path, help="where the datasets go (default: TARGET/../myelin-data)")
    args = parser.parse_args(argv)
    target = args.target.resolve()
    files = assemble(args.wheelhouse)
    wheels = [str(f) for f in files if f.suffix == ".whl"]
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade", "--quiet"]
    subprocess.run([*pip, "--disable-pip-version-check", "--target", str(target), *wheels], check=True)
    env = {"PYTHONPATH": str(target)}
    data = (args.data_dir or target.parent / "myelin-data").resolve()
    if (args.wheelhouse / DATA_TAR).is_file():
        with tarfile.open(args.wheelhouse / DATA_TAR) as tar:
            tar.extractall(data, filter="data")
        env["MYELIN_DATA_DIR"] = str(data / "data")
    libraries = library_path()
    if libraries:
        env["LD_LIBRARY_PATH"] = libraries
    lines = [f"export {k}={shlex.quote(v)}${{{k}:+:${k}}}" if k != "MYELIN_DATA_DIR" else
             f"export {k}={shlex.quote(v)}" for k, v in env.items()]  # fmt: skip
    (target / "env.sh").write_text("\n".join(lines) + "\n")
    probe = "import onnxruntime as o; print(o.__file__, o.__version__, o.get_available_providers())"
    merged = {**os.environ, **{k: v + os.pathsep + os.environ.get(k, "") for k, v in env.items()}}
    found = subprocess.run([sys.executable, "-c", probe], env=merged, capture_output=True, text=True, check=True)
    if not found.stdout.startswith(str(target)):
        raise SystemExit(f"onnxruntime does not come from {target}: {found.stdout.strip()}")
    print(f"installed {len(wheels)} wheels into {target}; onnxruntime: {found.stdout.strip()}")
    print(f"before running anything: source {target / 'env.sh'}")


if __name__ == "__main__":
    main()
