"""Checkpoint averaging: the element-wise mean of the last epochs' weights.

With a cosine schedule the last epochs sit close together around a minimum; their mean often
scores a little higher than any one of them. The trainer keeps the weights of the last
`average_last` epochs (`weights-epoch<N>.pt` in the run folder) and, at export, uses their mean
only when it beats the best single epoch on the validation BLEU it already measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def weights_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"weights-epoch{epoch}.pt"


def keep_epoch_weights(run_dir: Path, model: torch.nn.Module, epoch: int, keep: int) -> None:
    """Save this epoch's weights and delete those of epochs that can no longer be among the last `keep`."""
    path = weights_path(run_dir, epoch)
    tmp = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "model": model.state_dict()}, tmp)
    tmp.replace(path)
    for old in run_dir.glob("weights-epoch*.pt"):
        if int(old.stem.removeprefix("weights-epoch")) <= epoch - keep:
            old.unlink()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights from a weights file or a full training checkpoint (both have "model")."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    weights: dict[str, torch.Tensor] = state["model"]
    return weights


def average_weights(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (in float32); other tensors come from the last file."""
    if not paths:
        raise ValueError("nothing to average")
    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for path in paths:
        last = load_weights(path)
        for name, tensor in last.items():
            if tensor.is_floating_point():
                total[name] = total[name] + tensor.float() if name in total else tensor.float().clone()
    return {
        name: (total[name] / len(paths)).to(tensor.dtype) if name in total else tensor for name, tensor in last.items()
    }
