"""Locating dataset files and fingerprinting them.

Nothing here downloads: these machines have no internet, so a missing file is one clear error that
names every path that was tried and where the data can be put.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message lists every path that was looked at."""

    def __init__(self, dataset: str, tried: Sequence[Path]) -> None:
        listing = "\n  ".join(str(p) for p in tried)
        super().__init__(
            f"{dataset} not found. Looked for:\n  {listing}\n"
            "Point --data-dir (or MYELIN_DATA_DIR) at a folder holding it; this project never "
            "downloads datasets at run time."
        )
        self.dataset = dataset
        self.tried = list(tried)


def find_file(dataset: str, data_dir: Path, candidates: Iterable[str]) -> Path:
    """The first of `candidates` (paths relative to `data_dir`) that exists."""
    tried = [data_dir / c for c in candidates]
    for path in tried:
        if path.is_file():
            return path
    raise DatasetNotFoundError(dataset, tried)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(files: Iterable[Path]) -> dict[str, object]:
    """Per-file SHA-256 and one combined digest, for manifests."""
    per_file = {p.name: sha256_file(p) for p in sorted(files)}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in per_file.items()).encode()).hexdigest()
    return {"files": per_file, "sha256": combined}
