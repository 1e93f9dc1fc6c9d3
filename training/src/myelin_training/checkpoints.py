"""Checkpoints the epoch-based jobs (digits, word2vec) write after every epoch, and `--resume` reads.

A checkpoint is written beside itself and renamed into place, so a job killed while saving leaves
the previous one whole. It holds what the next epoch needs to go on exactly where the last one
ended: weights, optimizer and schedule, random generators, the configs, the epoch and the time spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load(path: Path) -> dict[str, Any]:
    """The checkpoint to resume from; a clear exit when there is none."""
    if not path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {path}; train without --resume first")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state
